"""The web page in real headless Chromium (Debian's, driven by Playwright): upload an image,
the boxes appear, and a screenshot is saved as a test artifact."""

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.utils.graphs import red_box_model, save
from tests.utils.images import encode, red_box_image
from tests.utils.server_process import start_server, stop_server
from tests.utils.system import require_binary

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's, from system-deps
# Chromium as root in a closed network: no sandbox, no background calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _require_chromium() -> None:
    require_binary("chromium")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("web")
    model = save(red_box_model(metadata={"synthetic": "true", "variant": "S"}), folder / "red.onnx")
    process: subprocess.Popen[bytes]
    process, base = start_server(model, folder, PHONE_DET_API_KEYS='["page-key"]')
    yield base
    stop_server(process)


def test_upload_shows_boxes_count_and_synthetic_warning(server: str, tmp_path: Path) -> None:
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    photo = tmp_path / "desk.jpg"
    photo.write_bytes(encode(red_box_image((1280, 720), (500, 200, 700, 560)), "JPEG", quality=92))
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server)
            page.fill("#apikey", "page-key")
            page.dispatch_event("#apikey", "change")
            expect(page.locator("#synthetic")).to_be_visible()
            expect(page.locator("#model")).to_contain_text("SYNTHETIC")

            page.set_input_files("#file", str(photo))

            expect(page.locator("body")).to_have_attribute("data-state", "done")
            expect(page.locator("#count")).to_have_text("1")
            expect(page.locator("li.detection")).to_have_count(1)
            expect(page.locator("li.detection")).to_contain_text("phone 0.90 [500, 200, 700, 560]")
            expect(page.locator("#canvas")).to_be_visible()
            # The box is drawn on the canvas: its left edge is red, the background is blue.
            edge = page.evaluate(
                "() => Array.from(document.getElementById('canvas')"
                ".getContext('2d').getImageData(500, 380, 1, 1).data)"
            )
            assert edge[0] > 200, edge
            assert edge[2] < 100, edge
            page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)
        finally:
            browser.close()

    assert (ARTIFACTS / "web-page.png").stat().st_size > 10_000


def test_page_reports_a_rejected_key(server: str, tmp_path: Path) -> None:
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    photo = tmp_path / "desk.jpg"
    photo.write_bytes(encode(red_box_image((320, 240), (10, 10, 60, 60)), "JPEG"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server)
            page.fill("#apikey", "wrong-key")
            page.set_input_files("#file", str(photo))
            expect(page.locator("#error")).to_contain_text("401 unauthorized")
        finally:
            browser.close()
