"""Fault injection against a real `phone-detector serve`: the decode pool saturated with big
images, a client vanishing mid-upload, and one vanishing while its frame waits in the queue.
The service stays responsive and ready, serves the next requests, and counts each case."""

import asyncio
import json
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.robustness.gated import metric
from tests.robustness.rawhttp import Answer, Connection, get_request, multipart_request
from tests.utils.graphs import red_box_model, save
from tests.utils.images import encode, red_box_image
from tests.utils.server_process import start_server, stop_server

pytestmark = pytest.mark.slow

SMALL = encode(red_box_image((320, 240), (20, 40, 120, 200)), "JPEG", quality=90)


def _big_png() -> bytes:
    """A 4000x3000 PNG: a small upload (~50 kB) whose decode is a full 12-megapixel inflate
    (PNG has no reduced-size decode), about 0.2 s of a decode thread."""
    pixels = np.asarray(red_box_image((4000, 3000), (1000, 1000, 2000, 2500))).copy()
    pixels[::16, ::16] = 255
    return encode(Image.fromarray(pixels), "PNG")


class Server:
    def __init__(self, process: subprocess.Popen[bytes], base: str, log: Path) -> None:
        self.process = process
        self.port = int(base.rsplit(":", 1)[1])
        self.log = log

    def post(self, files: list[tuple[str, bytes]]) -> bytes:
        return multipart_request("127.0.0.1", self.port, "/v1/detect", files)

    def get(self, path: str) -> bytes:
        return get_request("127.0.0.1", self.port, path)

    async def one(self, raw: bytes) -> Answer:
        connection = Connection("127.0.0.1", self.port)
        try:
            return await connection.send(raw)
        finally:
            await connection.close()

    async def metrics(self) -> str:
        return (await self.one(self.get("/metrics"))).body.decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("server_faults")
    model = save(red_box_model(heavy_convs=1), work / "heavy.onnx")
    process, base = start_server(
        model, work, PHONE_DET_MAX_BATCH_SIZE="1", PHONE_DET_QUEUE_SIZE="64"
    )
    yield Server(process, base, work / "server.log")
    stop_server(process)


async def _still_serving(server: Server) -> None:
    ready = await server.one(server.get("/readyz"))
    served = await server.one(server.post([("a.jpg", SMALL)]))
    assert server.process.poll() is None
    assert ready.status == 200, ready.body
    assert served.status == 200, served.body


def test_saturated_decode_pool_leaves_probes_fast(server: Server) -> None:
    raw = server.post([("big.png", _big_png())] * 2)
    window_s = 3.0

    async def scenario() -> tuple[list[float], list[float], list[int]]:
        probe = Connection("127.0.0.1", server.port)
        idle = [(await probe.send(server.get("/healthz"))).seconds for _ in range(10)]
        stop = time.monotonic() + window_s
        statuses: list[int] = []
        loaded: list[float] = []

        async def uploader() -> None:
            connection = Connection("127.0.0.1", server.port)
            while time.monotonic() < stop:
                statuses.append((await connection.send(raw)).status)
            await connection.close()

        async def prober() -> None:
            await asyncio.sleep(0.5)  # let the pool fill up first
            while time.monotonic() < stop:
                for path in ("/healthz", "/readyz"):
                    answer = await probe.send(server.get(path))
                    assert answer.status == 200, answer.body
                    loaded.append(answer.seconds)
                await asyncio.sleep(0.05)

        await asyncio.gather(prober(), *(uploader() for _ in range(8)))
        await probe.close()
        return idle, loaded, statuses

    started = time.time()
    idle, loaded, statuses = asyncio.run(scenario())

    decode_ms = [
        timing["decode"]
        for line in server.log.read_text().splitlines()
        if '"detect request"' in line
        and (entry := json.loads(line))["status"] == "success"
        and _epoch(entry["time"]) >= started - 1
        for timing in entry["timings_ms"]
    ]
    # the load was real: big decodes kept the two decode threads busy most of the window
    assert statuses
    assert set(statuses) <= {200, 504}, statuses
    assert sum(decode_ms) / 1000 > window_s, (sum(decode_ms), window_s)
    # ... while the event loop kept answering probes in a few ms, far less than one decode
    # (a decode on the loop, or one holding the GIL, would stall every probe behind it)
    loaded.sort()
    assert len(loaded) >= 10
    assert statistics.median(loaded) < min(0.1, statistics.median(decode_ms) / 1000 / 2), (
        statistics.median(idle),
        statistics.median(decode_ms),
        loaded,
    )
    assert loaded[int(len(loaded) * 0.9)] < 0.3, loaded
    asyncio.run(_still_serving(server))


def _epoch(logged: str) -> float:
    """`2026-11-25 03:21:05,901` (local time) -> seconds since the epoch."""
    return time.mktime(time.strptime(logged.split(",")[0], "%Y-%m-%d %H:%M:%S"))


def test_client_vanishing_mid_upload(server: Server) -> None:
    raw = server.post([("a.jpg", SMALL)])

    def http_counts(text: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("http_server_duration_milliseconds_count{")
            and 'http_target="/v1/detect"' in line
        )

    before = asyncio.run(server.metrics())
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(raw[: len(raw) // 2])  # headers promise more than ever comes
            time.sleep(0.1)
    time.sleep(0.3)
    after = asyncio.run(server.metrics())

    asyncio.run(_still_serving(server))
    # the cut-off requests were seen and counted (never as a detection or a model error)
    assert http_counts(after) - http_counts(before) == 3
    for status in ("success", "error", "timeout"):
        assert metric(
            after, "phone_detection_requests_total", method="multipart", status=status
        ) == (metric(before, "phone_detection_requests_total", method="multipart", status=status))
    assert "Traceback" not in server.log.read_text()


def test_client_vanishing_while_queued_is_dropped_before_inference(server: Server) -> None:
    blockers = 30  # one frame per batch: a few seconds of model work ahead of the victim
    raw = server.post([("a.jpg", SMALL)])

    async def scenario() -> tuple[str, str, list[int]]:
        before = await server.metrics()
        started_before = metric(before, "phone_detection_queue_wait_duration_seconds_count")

        async def queued_or_ran() -> float:
            # every submitted frame is either still queued or has started its batch
            text = await server.metrics()
            started = metric(text, "phone_detection_queue_wait_duration_seconds_count")
            return started - started_before + metric(text, "phone_detection_queue_depth")

        async def wait_for_frames(count: int) -> None:
            deadline = time.monotonic() + 20
            while await queued_or_ran() < count:
                assert time.monotonic() < deadline, "frames never reached the queue"
                await asyncio.sleep(0.02)

        work = [asyncio.create_task(server.one(raw)) for _ in range(blockers)]
        await wait_for_frames(blockers)
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(raw)
        await writer.drain()
        await wait_for_frames(blockers + 1)  # the victim's frame is queued behind them
        text = await server.metrics()
        still_queued = metric(text, "phone_detection_queue_depth")
        writer.close()  # ... and its client leaves
        answers = await asyncio.gather(*work)
        await asyncio.sleep(0.2)
        assert still_queued >= 2, "the queue drained before the client left; test too slow"
        return before, await server.metrics(), [a.status for a in answers]

    before, after, statuses = asyncio.run(scenario())

    assert statuses == [200] * blockers
    gone = "phone_detection_frames_rejected_total"
    assert (
        metric(after, gone, reason="client_disconnected")
        - metric(before, gone, reason="client_disconnected")
        == 1
    )
    ran = metric(after, "phone_detection_batch_size_sum") - metric(
        before, "phone_detection_batch_size_sum"
    )
    assert ran == blockers, "the abandoned frame went through the model"
    assert metric(after, "phone_detection_queue_depth") == 0
    asyncio.run(_still_serving(server))
