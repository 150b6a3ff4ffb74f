"""`python -m bench`: ceiling, our service, the per-request baseline and peers, per model."""

import argparse
import asyncio
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import httpx
import onnxruntime
import psutil

from bench import report
from bench.ceiling import Ceiling, measure_ceiling
from bench.fixtures import camera_jpeg, model_file
from bench.loadgen import closed_loop
from bench.overload import measure_overload
from bench.servers import MemoryWatch, ServerSpec, our_service, peer, running

logger = logging.getLogger("bench")

RESULTS = Path(__file__).resolve().parent / "results"
PEERS = {
    "ray-serve": "bench.peers.ray_serve_app",
    "litserve": "bench.peers.litserve_app",
    "bentoml": "bench.peers.bentoml_app",
}
PORT = 8765
OUR_SERVERS = ("service", "baseline", "fixed-window")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["N", "S"],
        help="synthetic N, T, S, M; X: an accelerator-like cost curve (bench/emulated.py)",
    )
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16, 64])
    parser.add_argument(
        "--servers",
        nargs="+",
        default=["service", "baseline", *PEERS],
        help="service, baseline (max_batch_size=1), fixed-window (the service with "
        "PHONE_DET_BATCH_WINDOW=fixed) and peers: " + ", ".join(PEERS),
    )
    parser.add_argument(
        "--fixed-wait-ms",
        type=float,
        default=10.0,
        help="the fixed-window server's PHONE_DET_MAX_WAIT_MS",
    )
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=2,
        help="batch limit of the service and of every peer (the service's default is 2)",
    )
    parser.add_argument("--point-s", type=float, default=4.0, help="shortest window per point")
    parser.add_argument("--max-point-s", type=float, default=10.0, help="longest window")
    parser.add_argument(
        "--service-env",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="extra PHONE_DET_* settings for the service (not the baseline)",
    )
    parser.add_argument(
        "--overload",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also drive the service at 4x its sustained rate, then flood it (bench/overload.py)",
    )
    parser.add_argument("--tag", default="latest", help="results file name stem")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def _spec(name: str, model: Path, args: argparse.Namespace) -> ServerSpec:
    extra = dict(item.split("=", 1) for item in args.service_env)
    if name in ("service", "fixed-window"):
        window = "adaptive" if name == "service" else "fixed"
        return our_service(
            name,
            model,
            port=PORT,
            max_batch_size=args.max_batch_size,
            threads=args.threads,
            extra={
                "PHONE_DET_BATCH_WINDOW": window,
                # The adaptive service keeps its default cap; the fixed window is the option.
                **({"PHONE_DET_MAX_WAIT_MS": str(args.fixed_wait_ms)} if window == "fixed" else {}),
                **extra,
            },
        )
    if name == "baseline":
        return our_service(name, model, port=PORT, max_batch_size=1, threads=args.threads, extra={})
    return peer(
        name,
        PEERS[name],
        model,
        port=PORT,
        threads=args.threads,
        max_batch_size=args.max_batch_size,
    )


def _measure_server(
    spec: ServerSpec, ceiling: Ceiling, jpeg: bytes, args: argparse.Namespace, variant: str
) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{PORT}{spec.detect_path}"
    per_image_s = (ceiling.model_ms_per_image + ceiling.prepare_ms) / 1000.0
    points = []
    log_path = args.out / "logs" / f"{args.tag}-{variant}-{spec.name}.log"
    started = time.monotonic()
    with running(spec, port=PORT, jpeg=jpeg, log_path=log_path) as pid, MemoryWatch(pid) as memory:
        logger.info("%s/%s up in %.1f s", variant, spec.name, time.monotonic() - started)
        for k in args.concurrency:
            cycle_s = k * per_image_s  # one closed-loop round trip at the ceiling's pace
            warmup_s = min(max(1.0, cycle_s), 6.0)
            window_s = min(max(args.point_s, 2 * cycle_s), args.max_point_s)
            memory.reset()
            batches_before = _batch_totals(spec)
            result = asyncio.run(
                closed_loop(
                    url,
                    jpeg,
                    concurrency=k,
                    duration_s=window_s,
                    warmup_s=warmup_s,
                    label=f"{variant} {spec.name} K={k}",
                )
            )
            result.peak_rss_mb = memory.peak_bytes / 2**20
            result.mean_batch = _mean_batch(batches_before, _batch_totals(spec))
            logger.info(
                "%s %-10s K=%-3d %7.2f img/s  p50 %7.1f  p99 %7.1f ms  errors %s  rss %.0f MB",
                variant,
                spec.name,
                k,
                result.images_per_s,
                result.p50_ms,
                result.p99_ms,
                result.errors or 0,
                result.peak_rss_mb,
            )
            points.append({"server": spec.name, **result.as_dict()})
    return points


def _batch_totals(spec: ServerSpec) -> tuple[float, float] | None:
    """(frames, batches) run so far, from our service's /metrics; None for peers."""
    if not spec.name.startswith(OUR_SERVERS):
        return None
    text = httpx.get(f"http://127.0.0.1:{PORT}/metrics", timeout=10).text
    totals = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("phone_detection_batch_size_sum", "phone_detection_batch_size_count"):
            totals[name] = float(value)
    return totals["phone_detection_batch_size_sum"], totals["phone_detection_batch_size_count"]


def _mean_batch(
    before: tuple[float, float] | None, after: tuple[float, float] | None
) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def main() -> None:
    """Run every measurement and write JSON, Markdown and a PNG plot to the results folder."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = _parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    jpeg = camera_jpeg()
    run: dict[str, Any] = {
        "machine": {
            "cpus": psutil.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
        },
        "settings": {
            "threads": args.threads,
            "service_env": args.service_env,
            "max_batch_size": args.max_batch_size,
            "fixed_wait_ms": args.fixed_wait_ms,
            "jpeg_bytes": len(jpeg),
            "image": "1280x720 JPEG q90",
        },
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "variants": {},
    }
    for variant in args.variants:
        model = model_file(variant, args.out / "models")
        logger.info("%s: measuring the ceiling", variant)
        ceiling = measure_ceiling(model, jpeg, intra_op_threads=args.threads)
        logger.info(
            "%s ceiling: model %.1f ms/img (batch %d), prepare %.1f ms -> %.2f img/s",
            variant,
            ceiling.model_ms_per_image,
            ceiling.best_batch,
            ceiling.prepare_ms,
            ceiling.images_per_s,
        )
        points: list[dict[str, Any]] = []
        for name in args.servers:
            try:
                points += _measure_server(_spec(name, model, args), ceiling, jpeg, args, variant)
            except RuntimeError as exc:
                logger.error("%s/%s skipped: %s", variant, name, exc)
        run["variants"][variant] = {"ceiling": ceiling.as_dict(), "points": points}
        if args.overload:
            run["variants"][variant]["overload"] = measure_overload(
                model,
                jpeg,
                sustainable_per_s=_sustainable_per_s(points, ceiling),
                port=PORT,
                threads=args.threads,
                max_batch_size=args.max_batch_size,
                window_s=args.max_point_s,
                log_path=args.out / "logs" / f"{args.tag}-{variant}-overload.log",
                label=f"{variant} overload",
            )
        _write(run, args)  # keep what we have if a later variant fails
    for line in report.ratio_lines(run):
        logger.info("%s", line)


def _sustainable_per_s(points: list[dict[str, Any]], ceiling: Ceiling) -> float:
    """The service's best closed-loop throughput, or the ceiling's where it was not measured."""
    ours = [p["images_per_s"] for p in points if p["server"] == "service"]
    return max(ours) if ours else ceiling.images_per_s


def _write(run: dict[str, Any], args: argparse.Namespace) -> None:
    (args.out / f"{args.tag}.json").write_text(json.dumps(run, indent=2))
    (args.out / f"{args.tag}.md").write_text(report.markdown(run))
    report.plot(run, args.out / f"{args.tag}.png")
