"""A closed-loop flood of `/v1/detect` requests from many raw-socket clients, and what the
server's JSON log says it answered."""

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.robustness.rawhttp import Answer, Connection, ConnectionClosedError


@dataclass
class Outcome:
    sent_at: float  # time.monotonic() when the request was written
    answer: Answer | None  # None: the connection closed or reset without an answer


@dataclass
class Flood:
    outcomes: list[Outcome] = field(default_factory=list)
    refused: int = 0  # connects refused (nothing listening any more)

    @property
    def answers(self) -> list[Answer]:
        return [o.answer for o in self.outcomes if o.answer is not None]

    @property
    def unanswered(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.answer is None]

    def kinds(self) -> Counter[tuple[int, str | None]]:
        """(status, error code) of every answer."""
        return Counter((a.status, a.code) for a in self.answers)


async def flood(
    port: int, raw: bytes, *, clients: int, until: float, stop_when_refused: bool = False
) -> Flood:
    """`clients` connections each send `raw` back to back until time.monotonic() >= `until`
    (or, with `stop_when_refused`, until the server refuses a new connection)."""
    result = Flood()

    async def client() -> None:
        connection = Connection("127.0.0.1", port)
        while time.monotonic() < until:
            if connection.writer is None:
                try:
                    await connection.connect()
                except OSError:
                    result.refused += 1
                    if stop_when_refused:
                        return
                    await asyncio.sleep(0.05)
                    continue
            sent_at = time.monotonic()
            try:
                result.outcomes.append(Outcome(sent_at, await connection.send(raw)))
            except ConnectionClosedError:
                result.outcomes.append(Outcome(sent_at, None))
        await connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return result


def logged_requests(log: Path) -> list[dict[str, object]]:
    """Every `detect request` line the server logged (one per request it handled)."""
    entries = []
    for line in log.read_text(errors="replace").splitlines():
        if '"detect request"' not in line:
            continue
        entry = json.loads(line)
        if entry.get("message") == "detect request":
            entries.append(entry)
    return entries


def log_kinds(entries: list[dict[str, object]]) -> Counter[tuple[int, str | None]]:
    """(HTTP status, error code) of each logged request, as the client should have seen it."""
    status_of = {
        None: 200,
        "queue_full": 503,
        "shutting_down": 503,
        "not_ready": 503,
        "timeout": 504,
        "model_error": 500,
        "internal_error": 500,
    }
    codes = [None if entry["code"] is None else str(entry["code"]) for entry in entries]
    return Counter((status_of.get(code, -1), code) for code in codes)


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]
