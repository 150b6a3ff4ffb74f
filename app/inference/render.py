"""Draw detections onto a copy of an image, for `--render` and annotated API responses."""

import io

from PIL import Image, ImageDraw, ImageFont, ImageOps

from app.inference.types import Detection

_BOX_COLOUR = (255, 40, 40)
_TEXT_COLOUR = (255, 255, 255)


def render_detections(data: bytes, detections: list[Detection], *, image_format: str) -> bytes:
    """Returns `data` (any decodable image) upright, with boxes, labels and scores drawn.

    `image_format` is a Pillow format name such as "JPEG" or "PNG".
    """
    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    draw = ImageDraw.Draw(image)
    line_px = max(2, round(min(image.size) / 300))
    font = ImageFont.load_default(size=max(12, round(min(image.size) / 40)))
    for det in detections:
        box = (det.box.x1, det.box.y1, det.box.x2, det.box.y2)
        draw.rectangle(box, outline=_BOX_COLOUR, width=line_px)
        caption = f"{det.label} {det.score:.2f}"
        left, top, right, bottom = draw.textbbox((det.box.x1, det.box.y1), caption, font=font)
        lift = bottom - top + 2 * line_px
        text_y = det.box.y1 - lift if det.box.y1 >= lift else det.box.y1
        background = (left, text_y, right + 2 * line_px, text_y + lift)
        draw.rectangle(background, fill=_BOX_COLOUR)
        draw.text((det.box.x1 + line_px, text_y + line_px), caption, fill=_TEXT_COLOUR, font=font)
    out = io.BytesIO()
    save_options = {"quality": 90} if image_format == "JPEG" else {}
    image.save(out, format=image_format, **save_options)
    return out.getvalue()
