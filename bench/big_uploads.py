"""`python -m bench.big_uploads [--images N]`: one playground message with N 8000x5000 PNGs.

Each image is within the limits (40 megapixels, well under 30 MB as a PNG), so the playground
checks and downscales every one. Measured on a real `threadedit playground` process with the
offline engine: how long the upload takes to answer, the slowest answer to the page's own
GET /sessions/fragment sent meanwhile (did the checks stall the server?), and the process's peak
resident memory (VmHWM) before the message and once its turn has finished.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
SIZE = (8000, 5000)


def make_png(path: Path, shade: int) -> None:
    """A big but compressible PNG (gradients and rings): 40 megapixels in about 400 KB."""
    ramp = Image.linear_gradient("L").resize(SIZE)
    img = Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                              Image.new("L", SIZE, shade)))
    draw = ImageDraw.Draw(img)
    for k in range(40):
        draw.ellipse((k * 190, k * 110, k * 190 + 900, k * 110 + 700), outline=(255, k * 6, 0), width=9)
    img.save(path)


def peak_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(found.group(1)) / 1024 if found else float("nan")


async def measure(images: list[bytes], tmp: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "THREADEDIT_"))}
    env.update(PYTHONPATH=str(REPO), THREADEDIT_DATA_DIR=str(tmp / "data"), THREADEDIT_ENGINE="local")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "threadedit", "playground", "--port", "0", cwd=tmp, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        base = line.rsplit(" ", 1)[-1].strip()
        async with aiohttp.ClientSession(base) as http:
            async with http.get("/") as r:
                assert r.status == 200
            before = peak_mb(proc.pid)
            form = aiohttp.FormData()
            form.add_field("instruction", "make it warmer")
            for i, data in enumerate(images):
                form.add_field("files", data, filename=f"big{i}.png", content_type="image/png")
            start = time.perf_counter()
            upload = asyncio.ensure_future(
                http.post("/messages", data=form, headers={"Accept": "application/json"}))
            slowest = 0.0
            while not upload.done():
                t = time.perf_counter()
                async with http.get("/sessions/fragment") as r:
                    await r.read()
                slowest = max(slowest, time.perf_counter() - t)
            response = await upload
            answered = time.perf_counter() - start
            assert response.status == 200, await response.text()
            sid = (await response.json())["session"]
            while True:  # the turn itself (the offline engine) runs after the answer
                async with http.get(f"/s/{sid}/state") as r:
                    if not (await r.json())["busy"]:
                        break
                await asyncio.sleep(0.2)
            return {"upload_s": answered, "slowest_get_s": slowest, "peak_before_mb": before,
                    "peak_after_mb": peak_mb(proc.pid)}
    finally:
        proc.send_signal(signal.SIGINT)
        await proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="threadedit-bench-") as name:
        tmp = Path(name)
        images = []
        for i in range(args.images):
            make_png(tmp / "big.png", 20 * i)
            images.append((tmp / "big.png").read_bytes())
        result = asyncio.run(measure(images, tmp))
    print(f"{args.images} PNGs of {SIZE[0]}x{SIZE[1]} in one message "
          f"({sum(map(len, images)) / 1e6:.1f} MB):")
    print(f"  upload answered in {result['upload_s']:.1f} s; slowest other request meanwhile "
          f"{result['slowest_get_s']:.2f} s")
    print(f"  peak resident memory {result['peak_before_mb']:.0f} MB before, "
          f"{result['peak_after_mb']:.0f} MB after the turn")


if __name__ == "__main__":
    main()
