"""What every server is measured on: the synthetic N and S models and one 1280x720 JPEG."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SIZE_PX = (1280, 720)


def model_file(variant: str, folder: Path) -> Path:
    """The synthetic `variant` network in `folder`, built (seed 0) the first time; "X" is
    the accelerator-like emulation of bench.emulated."""
    path = folder / f"synthetic_{variant}.onnx"
    if variant == "X":
        from bench.emulated import build_fixed_cost_model

        build_fixed_cost_model(path)  # cheap, and always the current definition
    elif not path.is_file():
        from app.inference.builder import build_model_file

        folder.mkdir(parents=True, exist_ok=True)
        build_model_file(variant, path)
    return path


def camera_jpeg(*, quality: int = 90, seed: int = 0) -> bytes:
    """A deterministic photo-like 1280x720 JPEG: smooth gradients, a few shapes, sensor noise."""
    width, height = IMAGE_SIZE_PX
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([xs * 255 / width, ys * 255 / height, (xs + ys) % 256], axis=-1)
    for _ in range(12):
        x0, y0 = rng.integers(0, width - 200), rng.integers(0, height - 200)
        w, h = rng.integers(40, 200, size=2)
        pixels[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, size=3)
    pixels += rng.normal(0.0, 8.0, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()
