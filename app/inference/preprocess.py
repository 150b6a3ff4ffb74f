"""Image bytes -> RGB pixels -> letterboxed uint8 tensor in DAMO-YOLO's input layout.

DAMO-YOLO exports take RGB values 0-255 (no mean/std), the image resized with its aspect
ratio kept and placed at the top-left of the H x W canvas, zero padding right and bottom.
Frames stay uint8 (the model casts them to float32 itself; see model.py).
"""

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import ImageDecodeError, ImageTooLargeError, UnsupportedFormatError

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF"})

# We enforce our own pixel limit before decoding; Pillow's global guard would fire first
# with a warning (an error under pytest) and a different message.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True, slots=True)
class Letterboxed:
    """A model-ready uint8 tensor [3, H, W] plus what is needed to map boxes back.

    `scale` maps original pixels to input pixels (input = original * scale).
    """

    tensor: np.ndarray
    scale: float
    width_px: int
    height_px: int


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Identify the format and check the size from the header alone, before any decode.

    Raises UnsupportedFormatError for bytes that are no supported image format and
    ImageTooLargeError for images over `max_pixels` (decompression bombs).
    """
    if not data:
        raise ImageDecodeError("empty image")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise UnsupportedFormatError(
            "not a supported image; send JPEG, PNG, GIF, WebP, BMP or TIFF"
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"cannot read image header: {exc}") from exc
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedFormatError(
            f"{image.format} images are not supported; send JPEG, PNG, GIF, WebP, BMP or TIFF"
        )
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageDecodeError("image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    return image


def decode_for_model(
    data: bytes, *, input_size_px: tuple[int, int], max_pixels: int
) -> tuple[Image.Image, int, int]:
    """Decode to an 8-bit RGB image, upright per EXIF, possibly reduced for speed.

    Returns (image, original_width_px, original_height_px); the original size is that of
    the upright full-resolution image, which boxes are reported in. A JPEG much larger than
    `input_size_px` (H, W) is decoded at 1/2, 1/4 or 1/8 scale (Pillow draft mode), never
    smaller than what the letterbox needs.
    """
    image = open_image(data, max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "palette images with transparency"
            orientation = image.getexif().get(0x0112, 1)
            raw_w, raw_h = image.size
            upright_w, upright_h = (raw_h, raw_w) if orientation in (5, 6, 7, 8) else image.size
            scale = _letterbox_scale(upright_w, upright_h, input_size_px)
            if image.format in ("JPEG", "MPO") and scale <= 0.5:
                image.draft("RGB", (math.ceil(raw_w * scale), math.ceil(raw_h * scale)))
            image.load()
            if orientation in _TRANSPOSED:  # exif_transpose copies an upright image anyway
                image = ImageOps.exif_transpose(image)
            rgb = _to_rgb8(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"cannot decode image: {exc}") from exc
    return rgb, upright_w, upright_h


_TRANSPOSED = range(2, 9)  # EXIF orientations other than "upright" (1)


def letterbox(
    image: Image.Image, *, original_size_px: tuple[int, int], input_size_px: tuple[int, int]
) -> Letterboxed:
    """Resize keeping aspect ratio and paste at the top-left of a zero (H, W) canvas."""
    orig_w, orig_h = original_size_px
    in_h, in_w = input_size_px
    scale = _letterbox_scale(orig_w, orig_h, input_size_px)
    new_w = min(in_w, max(1, round(orig_w * scale)))
    new_h = min(in_h, max(1, round(orig_h * scale)))
    if image.size != (new_w, new_h):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    tensor = np.zeros((3, in_h, in_w), dtype=np.uint8)
    tensor[:, :new_h, :new_w] = pixels.transpose(2, 0, 1)
    return Letterboxed(tensor=tensor, scale=scale, width_px=orig_w, height_px=orig_h)


def _letterbox_scale(width: int, height: int, input_size_px: tuple[int, int]) -> float:
    in_h, in_w = input_size_px
    return min(in_w / width, in_h / height)


def _to_rgb8(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; 16/32-bit values are rescaled, not clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I") and values.max(initial=0) > 255 else 255.0
        if image.mode == "F":
            peak = max(1.0, float(values.max(initial=1.0)))
        gray = np.clip(values * (255.0 / peak), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas become black, the same as the letterbox padding.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
