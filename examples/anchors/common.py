"""Shared definitions of the W6 anchor scripts (PyTorch DataLoader, Grain).

Workload W6, as in SPDL's PIL variant (w6_decode.py of the SPDL side of the comparison, which
is not part of this repository) and the Rust driver's `W6.c2`: the 500 files
img_00000.jpg..img_00499.jpg of the data directory (640x480, q90, 4:2:0, written by the
driver's `--id W6.x.write_data` or by the SPDL side's gen_jpeg_dataset.py), sorted, repeated
REPEAT times (default 2: 1000 images). Every file is read once before timing so that the page cache is warm, and the decoder
is called once (untimed). Each image: Pillow full-size decode, convert("RGB"), bilinear resize
to 224x224, np.asarray -> (224, 224, 3) uint8; or, with `--transform eval` or `rrc`,
torchvision's evaluation or training transform in place of the resize (see set_transform).

Timing window: t0 just before the loader (and its iterator, which starts the workers) is
made; t1 after the last item is consumed AND the iterator is deleted, so that the workers are
shut down and joined inside the window (the Rust driver's window ends after `stop()`).
`cpu_s` is the CPU time (user + system) of this process and of its waited-for children
(the workers) between t0 and t1, from getrusage(RUSAGE_SELF) + getrusage(RUSAGE_CHILDREN).

The consumer checks the shape and dtype of every image and sums all pixel values
(`pixel_sum`), which must equal the Rust driver's figure for the same decoder.

Output: one JSON line on stdout.
"""

from __future__ import annotations

import gc
import glob
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Iterable

import numpy as np
from PIL import Image


# The per-image transform, set once by the script (`--transform`) before the workers fork:
# "resize" (the whole image to 224x224, SPDL's PIL variant; the default), "eval"
# (torchvision's Resize(256) + CenterCrop(224), what the Rust driver's W6.c2 does) or "rrc"
# (torchvision's RandomResizedCrop(224) + RandomHorizontalFlip(), W6.rrc.c2; torch's global
# generator draws the crops), on the Pillow image.
TRANSFORM = "resize"
_TORCHVISION = None


def set_transform(name: str) -> None:
    global TRANSFORM, _TORCHVISION
    TRANSFORM = name
    if name in ("eval", "rrc"):
        from torchvision import transforms

        if name == "eval":
            _TORCHVISION = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
        else:
            _TORCHVISION = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()])


def pil_decode(path: str) -> np.ndarray:
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    if _TORCHVISION is not None:
        out = _TORCHVISION(rgb)
    else:
        out = rgb.resize((224, 224), resample=Image.Resampling.BILINEAR)
    return np.asarray(out)


def w6_paths(data_dir: str, repeat: int) -> list[str]:
    files = sorted(glob.glob(os.path.join(data_dir, "img_*.jpg")))
    if not files:
        sys.exit(
            f"no images in {data_dir}; write them with `cargo run --release -p pipeline-examples"
            f" --example bench -- --id W6.x.write_data --data-dir {data_dir}`"
        )
    for p in files:
        with open(p, "rb") as f:
            f.read()
    pil_decode(files[0])
    return files * repeat


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(make_iter: Callable[[], Iterable], n_images: int) -> dict:
    """Times one full pass: make the iterator, consume every image (or batch), shut down."""
    gc.collect()
    cpu0, t0 = _cpu_s(), time.perf_counter()
    it = iter(make_iter())
    t_first = None
    count = 0
    pixel_sum = 0
    for out in it:
        arr = np.asarray(out)
        if t_first is None:
            t_first = time.perf_counter()
        if arr.dtype != np.uint8 or arr.shape[-3:] != (224, 224, 3):
            sys.exit(f"bad output: {arr.dtype} {arr.shape}")
        count += 1 if arr.ndim == 3 else arr.shape[0]
        pixel_sum += int(arr.sum(dtype=np.uint64))
    del it, out
    gc.collect()
    t1, cpu1 = time.perf_counter(), _cpu_s()
    if count != n_images:
        sys.exit(f"{count} images out, {n_images} expected")
    wall = t1 - t0
    return {
        "n_items": count,
        "wall_s": wall,
        "items_per_sec": count / wall,
        "first_item_s": (t_first or t1) - t0,
        "cpu_s": cpu1 - cpu0,
        "cpu_s_per_item": (cpu1 - cpu0) / count,
        "pixel_sum": pixel_sum,
    }


def emit(loader: str, config: str, result: dict, params: dict) -> None:
    print(json.dumps({"workload": "W6", "loader": loader, "config": config, **result, "params": params}), flush=True)
