"""Test images with a red rectangle at known coordinates, in every format the tests need."""

import io

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND = (20, 60, 200)  # blue-ish: its red channel is low, so only the box is "red"
RED = (230, 30, 30)


def red_box_image(
    size_px: tuple[int, int], box: tuple[int, int, int, int], *, mode: str = "RGB"
) -> Image.Image:
    """An image of `size_px` (W, H) with `box` (x1, y1, x2, y2, exclusive end) filled red."""
    image = Image.new("RGB", size_px, BACKGROUND)
    x1, y1, x2, y2 = box
    ImageDraw.Draw(image).rectangle((x1, y1, x2 - 1, y2 - 1), fill=RED)
    return image if mode == "RGB" else image.convert(mode)


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    """Encode `image` as `image_format` bytes."""
    out = io.BytesIO()
    image.save(out, format=image_format, **options)
    return out.getvalue()


def bright_box_gray16(size_px: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    """A 16-bit grayscale PNG: black with `box` at 60000/65535 (bright after rescaling)."""
    width, height = size_px
    values = np.full((height, width), 3000, dtype=np.uint16)
    x1, y1, x2, y2 = box
    values[y1:y2, x1:x2] = 60000
    return encode(Image.fromarray(values), "PNG")
