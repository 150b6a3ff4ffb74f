"""The whole pipeline (decode, letterbox, model, post-process) against the red-box graph,
whose right answer is known: boxes must come back within 2 px in original pixels."""

import pytest
from PIL import Image

from app.inference.detector import Detector
from app.inference.types import DetectOptions
from tests.utils.graphs import RED_SCORE
from tests.utils.images import bright_box_gray16, encode, red_box_image

TOLERANCE_PX = 2.0


def _only_box(detector: Detector, data: bytes) -> tuple[float, float, float, float]:
    (result,) = detector.detect_batch([data], DetectOptions())
    assert result.count == 1, result
    (det,) = result.detections
    assert det.label == "phone"
    assert det.class_id == 67
    assert det.score == pytest.approx(RED_SCORE)
    return det.box.x1, det.box.y1, det.box.x2, det.box.y2


@pytest.mark.parametrize(
    ("size_px", "box", "image_format"),
    [
        ((1920, 1080), (300, 200, 600, 500), "JPEG"),
        ((1920, 1080), (1500, 900, 1920, 1080), "PNG"),  # touches the corner: clipped
        ((480, 640), (100, 333, 217, 590), "PNG"),  # portrait
        ((64, 48), (10, 7, 30, 40), "PNG"),  # tiny: upscaled 10x
        ((640, 640), (0, 0, 640, 640), "PNG"),  # exactly the input size
        ((1280, 720), (640, 100, 900, 700), "WEBP"),
    ],
)
def test_box_is_found_within_2px(
    detector: Detector,
    size_px: tuple[int, int],
    box: tuple[int, int, int, int],
    image_format: str,
) -> None:
    options = {"quality": 95} if image_format == "JPEG" else {"lossless": True}
    data = encode(red_box_image(size_px, box), image_format, **options)

    found = _only_box(detector, data)

    assert found == pytest.approx(box, abs=TOLERANCE_PX)


def test_result_reports_original_size(detector: Detector) -> None:
    data = encode(red_box_image((1920, 1080), (10, 10, 50, 50)), "PNG")

    (result,) = detector.detect_batch([data], DetectOptions())

    assert (result.width, result.height) == (1920, 1080)
    assert set(result.timings_ms) >= {"decode", "preprocess", "inference", "postprocess", "total"}


def test_exif_rotated_jpeg_reports_upright_box(detector: Detector) -> None:
    # Stored 800x600 landscape with orientation 6: shown as 600x800 portrait, rotated
    # 90 degrees clockwise, so stored (x, y) lands at (600 - y, x) upright.
    stored = red_box_image((800, 600), (100, 50, 300, 150))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", quality=95, exif=exif)

    (result,) = detector.detect_batch([data], DetectOptions())

    assert (result.width, result.height) == (600, 800)
    det = result.detections[0]
    assert (det.box.x1, det.box.y1, det.box.x2, det.box.y2) == pytest.approx(
        (450, 100, 550, 300), abs=TOLERANCE_PX
    )


def test_grayscale_png(detector: Detector) -> None:
    # Gray has R = G = B: a white box on black is "red" to the graph's red-channel test.
    image = Image.new("L", (1000, 700), 10)
    image.paste(240, (200, 100, 420, 380))

    found = _only_box(detector, encode(image, "PNG"))

    assert found == pytest.approx((200, 100, 420, 380), abs=TOLERANCE_PX)


def test_16bit_png_is_rescaled_not_clipped(detector: Detector) -> None:
    # Background 3000/65535 is dark once rescaled; clipping to 8 bits would make it white
    # and the whole frame would be the box.
    data = bright_box_gray16((900, 600), (150, 120, 450, 420))

    found = _only_box(detector, data)

    assert found == pytest.approx((150, 120, 450, 420), abs=TOLERANCE_PX)


@pytest.mark.parametrize("mode", ["RGBA", "P", "CMYK"])
def test_other_colour_modes(detector: Detector, mode: str) -> None:
    image = red_box_image((800, 600), (100, 100, 400, 300), mode=mode)
    image_format = "JPEG" if mode == "CMYK" else "PNG"
    options = {"quality": 95} if mode == "CMYK" else {}

    found = _only_box(detector, encode(image, image_format, **options))

    assert found == pytest.approx((100, 100, 400, 300), abs=TOLERANCE_PX)


def test_large_jpeg_uses_draft_decode_and_keeps_accuracy(detector: Detector) -> None:
    data = encode(red_box_image((4000, 3000), (1000, 800, 2000, 1600)), "JPEG", quality=95)

    found = _only_box(detector, data)

    # Decoded at 1/4 scale, then 0.64 of that: still within a few original pixels.
    assert found == pytest.approx((1000, 800, 2000, 1600), abs=4 * TOLERANCE_PX)


def test_no_red_means_no_phone_and_decoy_class_is_ignored(detector: Detector) -> None:
    data = encode(Image.new("RGB", (640, 480), (0, 0, 255)), "PNG")

    (result,) = detector.detect_batch([data], DetectOptions())

    assert result.detections == []


def test_batched_results_equal_single_results(detector: Detector) -> None:
    images = [
        encode(red_box_image((1920, 1080), (300, 200, 600, 500)), "PNG"),
        encode(red_box_image((480, 640), (10, 10, 100, 100)), "PNG"),
        encode(Image.new("RGB", (64, 64), (0, 0, 0)), "PNG"),
    ]

    batched = detector.detect_batch(images, DetectOptions())
    single = [detector.detect_batch([data], DetectOptions())[0] for data in images]

    assert [r.detections for r in batched] == [r.detections for r in single]
