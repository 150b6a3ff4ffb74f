"""Class names: COCO-80, a labels file, or names stored in the ONNX metadata."""

import json
from pathlib import Path

PHONE_LABEL = "phone"

COCO80_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

COCO_PHONE_NAME = "cell phone"


def class_names_for(
    num_classes: int, *, metadata_names: str | None, labels_path: Path | None
) -> list[str]:
    """Names for `num_classes` classes, preferring a labels file, then metadata, then COCO.

    Raises ValueError when a given source does not hold exactly `num_classes` names.
    """
    if labels_path is not None:
        names = [ln.strip() for ln in labels_path.read_text().splitlines() if ln.strip()]
        source = f"labels file {labels_path}"
    elif metadata_names:
        try:
            names = _parse_metadata_names(metadata_names)
        except ValueError:
            names = []
        source = "the model's 'names' metadata"
        if not names:
            return default_class_names(num_classes)
    else:
        return default_class_names(num_classes)
    if len(names) != num_classes:
        raise ValueError(f"{source} lists {len(names)} names, the model has {num_classes} classes")
    return names


def default_phone_classes(names: list[str]) -> list[int]:
    """COCO's 'cell phone', or the only class of a one-class model, or any 'phone' name."""
    if len(names) == 1:
        return [0]
    lowered = [n.lower() for n in names]
    for wanted in (COCO_PHONE_NAME, PHONE_LABEL, "mobile phone", "cellphone"):
        if wanted in lowered:
            return [lowered.index(wanted)]
    return []


def default_class_names(num_classes: int) -> list[str]:
    """COCO names for 80 classes, ["phone"] for one, otherwise "class_<i>"."""
    if num_classes == len(COCO80_NAMES):
        return list(COCO80_NAMES)
    if num_classes == 1:
        return [PHONE_LABEL]
    return [f"class_{i}" for i in range(num_classes)]


def _parse_metadata_names(raw: str) -> list[str]:
    """Accepts a JSON list, a JSON {index: name} dict (Ultralytics style) or a Python-ish dict."""
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        import ast

        try:
            parsed = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as exc:
            raise ValueError("unreadable names metadata") from exc
    if isinstance(parsed, list):
        return [str(n) for n in parsed]
    if isinstance(parsed, dict):
        return [str(parsed[k]) for k in sorted(parsed, key=lambda k: int(k))]
    raise ValueError("names metadata is neither a list nor a dict")
