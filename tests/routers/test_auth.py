"""Optional API-key auth, CORS off by default, and keys kept out of logs."""

import logging
from pathlib import Path

import pytest

from app.inference.model import OnnxModel
from tests.utils.images import encode, red_box_image
from tests.utils.service import running_app

pytestmark = pytest.mark.anyio

JPEG = encode(red_box_image((320, 240), (10, 10, 60, 60)), "JPEG", quality=95)
KEY = "s3cret-key-0123456789"


async def test_auth_is_off_without_keys(red_model: OnnxModel) -> None:
    async with running_app(red_model) as (_, client):
        response = await client.post("/v1/detect", files={"file": ("a.jpg", JPEG)})

    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": KEY}],
)
async def test_detection_needs_a_valid_key(red_model: OnnxModel, headers: dict[str, str]) -> None:
    async with running_app(red_model, api_keys=[KEY]) as (_, client):
        response = await client.post("/v1/detect", files={"file": ("a.jpg", JPEG)}, headers=headers)
        models = await client.get("/v1/models", headers=headers)
        metrics = (await client.get("/metrics")).text

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"
    assert models.status_code == 401
    assert 'phone_detection_errors_total{reason="unauthorized"} 2.0' in metrics


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
async def test_valid_key_in_either_header(red_model: OnnxModel, header: str) -> None:
    value = f"Bearer {KEY}" if header == "Authorization" else KEY
    async with running_app(red_model, api_keys=["other-key", KEY]) as (_, client):
        response = await client.post(
            "/v1/detect", files={"file": ("a.jpg", JPEG)}, headers={header: value}
        )

    assert response.status_code == 200


async def test_keys_from_a_file(red_model: OnnxModel, tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# camera gateway\n{KEY}\n\n")
    async with running_app(red_model, api_keys_file=keys) as (_, client):
        ok = await client.get("/v1/models", headers={"X-API-Key": KEY})
        refused = await client.get("/v1/models")

    assert (ok.status_code, refused.status_code) == (200, 401)


async def test_metrics_and_health_are_open_unless_configured(red_model: OnnxModel) -> None:
    async with running_app(red_model, api_keys=[KEY]) as (_, client):
        open_codes = [
            (await client.get(p)).status_code for p in ("/metrics", "/healthz", "/readyz")
        ]
    async with running_app(red_model, api_keys=[KEY], auth_metrics=True, auth_health=True) as (
        _,
        client,
    ):
        closed = [(await client.get(p)).status_code for p in ("/metrics", "/healthz", "/readyz")]
        with_key = [
            (await client.get(p, headers={"X-API-Key": KEY})).status_code
            for p in ("/metrics", "/healthz", "/readyz")
        ]

    assert open_codes == [200, 200, 200]
    assert closed == [401, 401, 401]
    assert with_key == [200, 200, 200]


async def test_cors_is_off_by_default_and_configurable(red_model: OnnxModel) -> None:
    preflight = {
        "Origin": "https://invigilator.example",
        "Access-Control-Request-Method": "POST",
    }
    async with running_app(red_model) as (_, client):
        off = await client.options("/v1/detect", headers=preflight)
    async with running_app(red_model, cors_origins=["https://invigilator.example"]) as (_, client):
        on = await client.options("/v1/detect", headers=preflight)

    assert "access-control-allow-origin" not in off.headers
    assert on.headers["access-control-allow-origin"] == "https://invigilator.example"


async def test_keys_and_image_bytes_never_reach_the_logs(
    red_model: OnnxModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_app(red_model, api_keys=[KEY]) as (_, client):
        await client.post("/v1/detect", files={"file": ("a.jpg", JPEG)}, headers={"X-API-Key": KEY})
        await client.post("/v1/detect", files={"file": ("a.jpg", JPEG)}, headers={"X-API-Key": "x"})

    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert "detect request" in logged
    assert KEY not in logged
    assert JPEG[:64].hex() not in logged
    assert repr(JPEG[:32]) not in logged
