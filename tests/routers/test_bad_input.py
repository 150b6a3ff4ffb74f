"""Every kind of bad input gets the right 4xx JSON error, is counted, and the service stays
ready; odd-but-valid images are served."""

import base64
import io
import re
import zipfile

import httpx
import pytest
from PIL import Image

from app.inference.model import OnnxModel
from tests.utils.images import bright_box_gray16, encode, red_box_image
from tests.utils.service import running_app

pytestmark = pytest.mark.anyio

JPEG = encode(red_box_image((640, 480), (100, 100, 200, 300)), "JPEG", quality=95)


def _zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("a.txt", "hello")
    return out.getvalue()


def _corrupt_png() -> bytes:
    data = bytearray(encode(red_box_image((64, 64), (1, 1, 9, 9)), "PNG"))
    data[60:90] = b"\x00" * 30  # inside the IDAT stream
    return bytes(data)


def _huge_png(side_px: int) -> bytes:
    # A uniform image compresses to almost nothing: a tiny upload claiming many pixels.
    return encode(Image.new("L", (side_px, side_px)), "PNG")


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"

BAD_UPLOADS = [
    ("text.jpg", b"just some text", 415, "unsupported_format"),
    ("doc.jpg", PDF, 415, "unsupported_format"),
    ("archive.jpg", _zip_bytes(), 415, "unsupported_format"),
    ("empty.jpg", b"", 400, "bad_image"),
    ("truncated.jpg", JPEG[: len(JPEG) // 3], 400, "bad_image"),
    ("corrupt.png", _corrupt_png(), 400, "bad_image"),
    ("bomb.png", _huge_png(8000), 413, "too_large"),
    ("icon.ico", encode(Image.new("RGB", (16, 16)), "ICO"), 415, "unsupported_format"),
]


def _errors_counted(text: str, reason: str) -> float:
    match = re.search(rf'phone_detection_errors_total\{{reason="{reason}"\}} ([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize(("name", "data", "status", "code"), BAD_UPLOADS)
async def test_bad_upload_is_a_counted_json_4xx(
    red_model: OnnxModel, name: str, data: bytes, status: int, code: str
) -> None:
    async with running_app(red_model, max_image_pixels=20_000_000) as (_, client):
        response = await client.post("/v1/detect", files={"file": (name, data)})
        ready = await client.get("/readyz")
        metrics = (await client.get("/metrics")).text

    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in response.text
    assert ready.status_code == 200
    assert _errors_counted(metrics, code) == 1


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"),
    [
        ({"content": b"", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 422,
         "invalid_request"),
        ({"data": {"score_threshold": "0.5"}}, 422, "invalid_request"),  # no file part
        ({"files": {"file": ("a.jpg", JPEG)}, "params": {"iou_threshold": -1}}, 422,
         "invalid_request"),
        ({"files": {"file": ("a.jpg", JPEG)}, "params": {"max_detections": "many"}}, 422,
         "invalid_request"),
        ({"files": [("file", ("a.jpg", JPEG))] * 3}, 413, "too_many_files"),
    ],
)  # fmt: skip
async def test_malformed_multipart_requests(
    red_model: OnnxModel,
    request_kwargs: dict,
    status: int,
    code: str,  # type: ignore[type-arg]
) -> None:
    async with running_app(red_model, max_files_per_request=2) as (_, client):
        response = await client.post("/v1/detect", **request_kwargs)
        metrics = (await client.get("/metrics")).text

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert _errors_counted(metrics, code) == 1


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"images": [{"data": "not base64!!"}]}, 400, "invalid_base64"),
        ({"images": "not a list"}, 422, "invalid_request"),
        ({"images": [{"data": 42}]}, 422, "invalid_request"),
        ({"images": []}, 422, "invalid_request"),
        ({"images": [{"data": base64.b64encode(JPEG).decode()}], "score_threshold": 7}, 422,
         "invalid_request"),
        ({"images": [{"data": base64.b64encode(b"hello").decode()}]}, 415, "unsupported_format"),
        ({"images": [{"data": base64.b64encode(JPEG).decode()}], "unknown": 1}, 422,
         "invalid_request"),
    ],
)  # fmt: skip
async def test_malformed_json_requests(
    red_model: OnnxModel, payload: object, status: int, code: str
) -> None:
    async with running_app(red_model) as (_, client):
        response = await client.post("/v1/detect/base64", json=payload)

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


async def test_invalid_json_body_is_422(red_model: OnnxModel) -> None:
    async with running_app(red_model) as (_, client):
        response = await client.post(
            "/v1/detect/base64", content=b"{not json", headers={"content-type": "application/json"}
        )

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


async def test_upload_over_byte_limit_is_refused_before_the_body_is_read(
    red_model: OnnxModel,
) -> None:
    sent = 0

    async def body_stream():  # type: ignore[no-untyped-def]
        nonlocal sent
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        for _ in range(64):
            sent += 64 * 1024
            yield b"\x00" * (64 * 1024)

    async with running_app(red_model, max_request_bytes=256 * 1024) as (_, client):
        declared = await client.post(
            "/v1/detect",
            content=b"\x00" * (1024 * 1024),
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        streamed = await client.post(
            "/v1/detect",
            content=body_stream(),
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        ready = await client.get("/readyz")

    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "too_large"
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "too_large"
    assert sent < 1024 * 1024  # cut off near the limit, not after the 4 MiB body
    assert ready.status_code == 200


async def test_single_file_over_upload_limit_is_413(red_model: OnnxModel) -> None:
    big = encode(red_box_image((1500, 1500), (1, 1, 2, 2)), "PNG", compress_level=0)
    async with running_app(red_model, max_upload_bytes=100_000) as (_, client):
        response = await client.post("/v1/detect", files={"file": ("big.png", big)})

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def _animated(image_format: str) -> bytes:
    first = red_box_image((320, 240), (20, 30, 120, 130))
    second = Image.new("RGB", (320, 240), (0, 0, 0))
    out = io.BytesIO()
    first.save(out, format=image_format, save_all=True, append_images=[second], duration=100)
    return out.getvalue()


ODD_BUT_VALID = [
    ("one-pixel.png", encode(Image.new("RGB", (1, 1), (230, 30, 30)), "PNG"), (0, 0, 1, 1)),
    ("strip.png", encode(red_box_image((10000, 10), (0, 0, 10000, 10)), "PNG"), (0, 0, 10000, 10)),
    ("deep.png", bright_box_gray16((300, 200), (50, 40, 150, 140)), (50, 40, 150, 140)),
    (
        "cmyk.jpg",
        encode(red_box_image((400, 300), (50, 50, 250, 200), mode="CMYK"), "JPEG", quality=95),
        (50, 50, 250, 200),
    ),
    (
        "palette.gif",
        encode(red_box_image((400, 300), (60, 40, 260, 240)).convert("P"), "GIF"),
        (60, 40, 260, 240),
    ),
    ("animated.gif", _animated("GIF"), (20, 30, 120, 130)),
    ("animated.webp", _animated("WEBP"), (20, 30, 120, 130)),
]


@pytest.mark.parametrize(("name", "data", "box"), ODD_BUT_VALID)
async def test_odd_but_valid_images_are_served(
    red_model: OnnxModel, name: str, data: bytes, box: tuple[int, int, int, int]
) -> None:
    async with running_app(red_model) as (_, client):
        response = await client.post("/v1/detect", files={"file": (name, data)})

    assert response.status_code == 200, response.text
    (det,) = response.json()["results"][0]["detections"]
    found = det["box"]
    assert (found["x1"], found["y1"], found["x2"], found["y2"]) == pytest.approx(box, abs=3)


async def test_errors_never_leak_internals_over_real_http(red_model: OnnxModel) -> None:
    # Same app, through a real HTTP transport layer of httpx's ASGI adapter: plain JSON only.
    async with running_app(red_model) as (_, client):
        response = await client.post("/v1/detect", files={"file": ("x.jpg", JPEG[:100])})

    assert response.headers["content-type"] == "application/json"
    assert isinstance(response, httpx.Response)
    assert set(response.json()) == {"error"}
