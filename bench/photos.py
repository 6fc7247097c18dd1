"""Photo-like JPEGs: what Gemini really sends back, in size and in how hard they are to compress.

The test fake draws flat squares of a few kB; a real 2K result is about a megabyte, and every
byte of it is read from disk, base64-encoded, sent and parsed again on each later turn. These
are smooth gradients with blurred shapes and grain, saved at quality 90: about 1 MB at 2048x2048.
Rendering one takes ~0.6 s, so a few variants are rendered once per run, kept as files and
reused (distinct bytes, so content-addressed storage cannot collapse consecutive versions).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter

GRAIN_SIGMA = 8  # Gaussian grain per channel; 8 gives ~1.05 MB at 2048x2048, quality 90
QUALITY = 90
VARIANTS = 4


def render(seed: int, size: tuple[int, int]) -> bytes:
    rnd = random.Random(seed)
    gradient = Image.linear_gradient("L")
    bands = [gradient.rotate(rnd.uniform(0, 360)).resize(size, Image.Resampling.BILINEAR)
             for _ in range(3)]
    image = Image.merge("RGB", bands)
    draw = ImageDraw.Draw(image)
    w, h = size
    scale = max(w, h) / 2048
    for _ in range(40):
        x, y = rnd.randrange(w), rnd.randrange(h)
        r = max(2, int(rnd.randrange(30, 300) * scale))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rnd.randrange(256) for _ in range(3)))
    image = image.filter(ImageFilter.GaussianBlur(6 * scale))
    grain = Image.merge("RGB", [Image.effect_noise(size, GRAIN_SIGMA) for _ in range(3)])
    image = ImageChops.add(image, grain, scale=1.0, offset=-128)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=QUALITY)
    return out.getvalue()


def variant_path(directory: Path, size: tuple[int, int], n: int) -> Path:
    return directory / f"photo-{size[0]}x{size[1]}-{n}.jpg"


def ensure(directory: Path, size: tuple[int, int], variants: int = VARIANTS) -> list[Path]:
    """The variant files for one pixel size, rendered on first use."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(variants):
        path = variant_path(directory, size, n)
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(render(1000 * size[0] + n, size))
            tmp.replace(path)
        paths.append(path)
    return paths


def load(directory: Path, size: tuple[int, int], variants: int = VARIANTS) -> list[bytes]:
    return [p.read_bytes() for p in ensure(directory, size, variants)]
