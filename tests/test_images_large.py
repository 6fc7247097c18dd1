"""Large images within the limits: checked one at a time, scaled in bands, JPEGs decoded at a
reduced scale, with peak memory measured in a separate process (Pillow's pixels are not Python
objects, so tracemalloc does not see them; the process's ru_maxrss does)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw

from bot import images
from bot.images import check_image

ROOT = Path(__file__).resolve().parents[1]
BIG = (8000, 5000)  # 40 megapixels: the most ImageLimits takes


def big_png(path: Path) -> Path:
    """40 megapixels that compress to a few hundred KB (gradients and rings)."""
    ramp = Image.linear_gradient("L").resize(BIG)
    img = Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), Image.new("L", BIG, 90)))
    draw = ImageDraw.Draw(img)
    for k in range(20):
        draw.ellipse((k * 350, k * 200, k * 350 + 900, k * 200 + 700), outline=(255, k * 12, 0), width=9)
    img.save(path)
    return path


# Checks `n` copies of the image at argv[1] in `n` threads at once; prints the peak growth in MB.
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent (pytest, large here).
_PROBE = """
import re, sys, threading
from bot.images import check_image
def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
data = open(sys.argv[1], "rb").read()
n = int(sys.argv[2])
base = peak()
threads = [threading.Thread(target=check_image, args=(data,)) for _ in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print((peak() - base) / 1024)
"""


def peak_growth_mb(path: Path, at_once: int) -> float:
    done = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(at_once)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=True)
    return float(done.stdout)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from Linux's /proc")
def test_large_images_checked_side_by_side_take_the_memory_of_one(tmp_path: Path) -> None:
    path = big_png(tmp_path / "big.png")
    one, three = peak_growth_mb(path, 1), peak_growth_mb(path, 3)
    print(json.dumps({"one_mb": one, "three_at_once_mb": three}))
    # One 40-megapixel RGB image: 160 MB of decoded pixels, the 42 MB result and one band (8 MB);
    # scaled in one resize it would also hold the 82 MB between its passes (about 280 in all).
    # Three at once would take three times that, were they not taken one after another.
    assert one < 250, one
    assert three < 1.4 * one, (one, three)


def test_scaling_in_bands_gives_the_pixels_of_one_resize_within_rounding() -> None:
    ramp = Image.linear_gradient("L").resize((1500, 1100))
    img = Image.merge("RGB", (ramp, ramp.rotate(90), ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    for size in ((700, 513), (1000, 733), (64, 47)):
        whole = img.resize(size, Image.Resampling.LANCZOS)
        # Equal but for rounding where a band starts between source rows: one level at most.
        diff = ImageChops.difference(whole, images._scale_down(img, size)).getextrema()
        assert max(high for _low, high in diff) <= 1, (size, diff)


def test_a_huge_jpeg_is_decoded_small_and_keeps_its_turn() -> None:
    photo = Image.linear_gradient("L").resize((10000, 3000)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=80, exif=exif.tobytes())
    decoded: list[tuple[int, int]] = []
    real = images._decode

    def spy(im, who, limits):  # type: ignore[no-untyped-def]
        result = real(im, who, limits)
        decoded.append(im.size)
        return result

    images._decode = spy
    try:
        checked = check_image(buf.getvalue(), filename="pano.jpg")
    finally:
        images._decode = real
    assert decoded == [(5000, 1500)]  # libjpeg's 1/2 scale, still above the 4096 kept
    assert (checked.width, checked.height, checked.mime) == (1229, 4096, "image/jpeg")
    assert checked.note == "Scaled it down from 3000×10000 to 1229×4096 pixels."
    assert Image.open(io.BytesIO(checked.data)).size == (1229, 4096)
