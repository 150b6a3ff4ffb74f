"""SIGTERM in the middle of a flood: every request the server accepted is answered, later
ones get 503 shutting_down (or find the socket closed), the process exits within the drain
timeout, and the server's log and the clients agree request for request."""

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.robustness.flood import Flood, flood, log_kinds, logged_requests
from tests.robustness.rawhttp import Connection, multipart_request
from tests.utils.graphs import red_box_model, save
from tests.utils.images import encode, red_box_image
from tests.utils.server_process import start_server, stop_server

pytestmark = pytest.mark.slow

JPEG = encode(red_box_image((320, 240), (20, 40, 120, 200)), "JPEG", quality=90)
DRAIN_TIMEOUT_S = 20.0
DEADLINE_S = 8.0  # < drain timeout: every accepted request ends within the drain
SIGNAL_AFTER_S = 2.0


def test_sigterm_mid_flood_answers_every_accepted_request(tmp_path: Path) -> None:
    model = save(red_box_model(heavy_convs=1), tmp_path / "heavy.onnx")
    process, base = start_server(
        model,
        tmp_path,
        PHONE_DET_QUEUE_SIZE="8",
        PHONE_DET_MAX_BATCH_SIZE="4",
        PHONE_DET_DEADLINE_MS=str(int(DEADLINE_S * 1000)),
        PHONE_DET_DRAIN_TIMEOUT_S=str(DRAIN_TIMEOUT_S),
    )
    port = int(base.rsplit(":", 1)[1])
    raw = multipart_request("127.0.0.1", port, "/v1/detect", [("a.jpg", JPEG)])
    signalled_at = exited_at = 0.0
    try:

        async def scenario() -> Flood:
            nonlocal signalled_at, exited_at
            warm = Connection("127.0.0.1", port)
            assert (await warm.send(raw)).status == 200
            await warm.close()
            hard_stop = time.monotonic() + SIGNAL_AFTER_S + DRAIN_TIMEOUT_S + 10
            flooding = asyncio.create_task(
                flood(port, raw, clients=32, until=hard_stop, stop_when_refused=True)
            )
            await asyncio.sleep(SIGNAL_AFTER_S)
            signalled_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            while process.poll() is None and time.monotonic() < hard_stop:
                await asyncio.sleep(0.02)
            exited_at = time.monotonic()
            return await flooding

        result = asyncio.run(scenario())
        process.wait(timeout=10)
    finally:
        stop_server(process)

    kinds = result.kinds()
    log = (tmp_path / "server.log").read_text(errors="replace")
    # exited by itself, within the drain timeout, without giving up on anyone
    assert process.returncode in (0, -signal.SIGTERM), process.returncode
    assert exited_at - signalled_at < DRAIN_TIMEOUT_S, exited_at - signalled_at
    assert "drain timeout" not in log
    assert "Cancel " not in log
    # the flood was real: served, shed and then refused for shutting down
    assert kinds[(200, None)] >= 3, kinds
    assert kinds[(503, "shutting_down")] >= 1, kinds
    assert set(kinds) <= {
        (200, None),
        (503, "queue_full"),
        (503, "shutting_down"),
        (504, "timeout"),
    }, kinds
    # nothing sent well after the signal was accepted
    late = [o.answer for o in result.outcomes if o.sent_at > signalled_at + 0.2 and o.answer]
    assert all(answer.status == 503 for answer in late), late[:5]
    # accepted = answered: every request the server handled (one log line each) reached its
    # client with the same status and code; a connection closed without an answer only ever
    # carried a request the server never started on
    logged = logged_requests(tmp_path / "server.log")
    assert log_kinds(logged) == kinds + Counter({(200, None): 1}), (log_kinds(logged), kinds)
    assert len(result.unanswered) <= 32, len(result.unanswered)  # at most one per client
