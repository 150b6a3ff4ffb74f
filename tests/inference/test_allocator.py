"""map_large_buffers: freed large buffers go back to the OS, where by default they stay.

Each case runs in a fresh interpreter: the malloc settings are process-wide.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from app.inference.allocator import map_large_buffers

ROOT = Path(__file__).resolve().parents[2]

# glibc's default: freeing a 16 MiB mapped buffer raises the threshold to 16 MiB, so 8 MiB
# buffers then come from the heap; with a smaller allocation after each (what a real program
# does between them), freeing them leaves holes the heap cannot give back.
RETAINED_MB = """
import ctypes, os, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "mapped":
    from app.inference.allocator import map_large_buffers
    assert map_large_buffers(1 << 20)

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

big = libc.malloc(16 << 20)
ctypes.memset(big, 1, 16 << 20)
libc.free(big)
before = rss()
held, pins = [], []
for _ in range(20):
    buffer = libc.malloc(8 << 20)
    ctypes.memset(buffer, 1, 8 << 20)
    held.append(buffer)
    pins.append(libc.malloc(256 << 10))
for buffer in held:
    libc.free(buffer)
print((rss() - before) / 2**20)
"""

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="mallopt is glibc's; the service runs on Linux"
)


def _retained_mb(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", RETAINED_MB, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return float(done.stdout)


@glibc_only
def test_large_buffers_are_returned_once_freed() -> None:
    default, mapped = _retained_mb("default"), _retained_mb("mapped")

    assert default > 100, "the scenario no longer shows glibc keeping freed buffers"
    assert mapped < 20


@glibc_only
def test_thresholds_glibc_refuses_change_nothing() -> None:
    assert map_large_buffers(0) is False
    assert map_large_buffers(64 * 1024 * 1024) is False
