"""Ask glibc's malloc to map large buffers on their own and unmap them when freed.

By default glibc raises its mmap threshold each time a large mapped buffer is freed (up to
32 MiB), after which buffers of that size come from the heap, where frees leave holes the OS
never gets back. onnxruntime's per-run intermediate tensors (tens of MB for S at 640) and the
decoded frames hit exactly that pattern: the service's RSS grew by ~70 MB over its first
requests and stayed there. A fixed threshold keeps such buffers mapped, so freeing one returns
it at once (bench, S at K=64: peak RSS 485 -> 413 MB at 128 KiB, same throughput). Smaller
allocations keep the heap: mapping costs page faults on every use.
"""

import ctypes
import sys

_M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
_GLIBC_MAX_MMAP_THRESHOLD = 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit


def map_large_buffers(threshold_bytes: int) -> bool:
    """Allocations of at least `threshold_bytes` are mmapped and unmapped when freed; the
    threshold stops adapting. False (and nothing changed) where this is not glibc or the
    threshold is out of glibc's range."""
    if not sys.platform.startswith("linux") or not 0 < threshold_bytes <= _GLIBC_MAX_MMAP_THRESHOLD:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other C libraries: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
