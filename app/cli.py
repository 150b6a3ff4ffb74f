"""The `phone-detector` command: detect phones in files, and inspect, fetch or build models.

Exit codes: 0 success; 1 an image could not be processed; 2 bad usage; 3 the model is
missing or not a DAMO-YOLO export; 4 a download failed. Errors are one line on stderr.
"""

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from app.config import get_settings
from app.errors import DetectorError, ModelError, ModelFetchError

if TYPE_CHECKING:
    from app.inference.model import OnnxModel

_T = TypeVar("_T")

EXIT_BAD_IMAGE = 1
EXIT_MODEL = 3
EXIT_FETCH = 4

cli = typer.Typer(
    name="phone-detector",
    help="Find mobile phones in images with DAMO-YOLO.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
model_cli = typer.Typer(help="Inspect, fetch and build detection models.", no_args_is_help=True)
cli.add_typer(model_cli, name="model")


def main() -> None:
    """Console-script entry point: runs the CLI, turning known errors into one line."""
    try:
        cli()
    except DetectorError as exc:
        _fail(exc)


@cli.command()
def detect(
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG, PNG, WebP, ...)")],
    model: Annotated[Path | None, typer.Option(help="ONNX model; default: the service's")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    render: Annotated[
        Path | None,
        typer.Option(help="Write an annotated copy here (a folder when several images)"),
    ] = None,
    score_threshold: Annotated[float | None, typer.Option(min=0.0, max=1.0)] = None,
    iou_threshold: Annotated[float | None, typer.Option(min=0.0, max=1.0)] = None,
    max_detections: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Print the phones found in each image."""
    from app.inference.detector import Detector
    from app.inference.render import render_detections
    from app.inference.types import DetectOptions

    settings = get_settings()
    onnx_model = _load_model(model)
    detector = Detector(onnx_model, max_image_pixels=settings.max_image_pixels)
    options = DetectOptions(
        score_threshold=_pick(score_threshold, settings.score_threshold),
        iou_threshold=_pick(iou_threshold, settings.iou_threshold),
        max_detections=_pick(max_detections, settings.max_detections),
    )
    if onnx_model.info.synthetic and not as_json:
        typer.echo("warning: synthetic model: detections are meaningless", err=True)
    results: list[dict[str, Any]] = []
    failed = False
    for path in images:
        try:
            data = path.read_bytes()
            (result,) = detector.detect_batch([data], options)
        except (OSError, DetectorError) as exc:
            failed = True
            reason = exc.message if isinstance(exc, DetectorError) else exc.strerror
            if isinstance(exc, ModelError):
                raise
            results.append({"image": str(path), "error": reason})
            typer.echo(f"error: {path}: {reason}", err=True)
            continue
        entry = {"image": str(path), **asdict(result), "count": result.count}
        results.append(entry)
        if render is not None:
            out = render / f"{path.stem}.annotated.jpg" if len(images) > 1 else render
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(render_detections(data, result.detections, image_format=_format(out)))
        if not as_json:
            _echo_result(path, entry)
    if as_json:
        info = onnx_model.info
        model_json = {"name": info.name, "variant": info.variant, "synthetic": info.synthetic}
        typer.echo(json.dumps({"model": model_json, "results": results}, indent=2))
    if failed:
        raise typer.Exit(EXIT_BAD_IMAGE)


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [PHONE_DET_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [PHONE_DET_PORT]")] = None,
) -> None:
    """Serve the HTTP API (model resolved and warmed up in the background)."""
    from app.server import serve as run_server

    settings = get_settings()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    run_server(settings.model_copy(update=overrides))


@model_cli.command("info")
def model_info(
    path: Annotated[Path, typer.Argument(help="ONNX model file")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Describe a model: input size, classes, phone classes, size, opset, synthetic, sha256."""
    from app.inference.model_report import describe_model

    report = describe_model(path, labels_path=get_settings().labels_path)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        if key == "class_names":
            value = f"{len(value)} classes"
        typer.echo(f"{key:>16}: {value}")


@model_cli.command("fetch")
def model_fetch(
    name: Annotated[str, typer.Argument(help="Official model name; see `model list`")],
    out: Annotated[Path | None, typer.Option(help="Folder; default: the model cache")] = None,
    url: Annotated[str | None, typer.Option(help="Download from this mirror URL instead")] = None,
) -> None:
    """Download an official DAMO-YOLO ONNX export, verify its contract, print its path."""
    from app.inference.zoo import fetch_model

    target = fetch_model(name, out or get_settings().model_cache_dir, url=url)
    typer.echo(str(target))


@model_cli.command("build")
def model_build(
    variant: Annotated[str, typer.Option(help="DAMO-YOLO variant: N, T, S or M")] = "S",
    classes: Annotated[int, typer.Option(min=1, help="80 (COCO) or 1 (phone only)")] = 80,
    seed: Annotated[int, typer.Option(min=0, help="Weight seed; same seed, same file")] = 0,
    out: Annotated[Path | None, typer.Option(help="Output file; default: the model cache")] = None,
) -> None:
    """Build a same-architecture DAMO-YOLO network with seeded weights (SYNTHETIC).

    Its speed and memory are those of the real model; its detections are meaningless.
    """
    from app.inference.builder import VARIANTS, build_model_file
    from app.inference.resolve import synthetic_model_path

    variant = variant.upper()
    if variant not in VARIANTS:
        raise typer.BadParameter(f"choose one of {', '.join(VARIANTS)}", param_hint="--variant")
    settings = get_settings()
    target = out or synthetic_model_path(settings.model_cache_dir, variant, seed, classes)
    build_model_file(variant, target, num_classes=classes, seed=seed)
    typer.echo(str(target))


@model_cli.command("optimize")
def model_optimize(
    path: Annotated[Path, typer.Argument(help="ONNX model file (DAMO-YOLO export)")],
    out: Annotated[
        Path | None,
        typer.Option(help="Optimised fp32 file; default <stem>.opt.onnx (int8: <stem>.int8.onnx)"),
    ] = None,
    int8: Annotated[bool, typer.Option("--int8/--no-int8", help="Also write an int8 model")] = True,
    calibration_dir: Annotated[
        Path | None,
        typer.Option(help="Folder of images to calibrate int8 on; default: synthetic scenes"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Save an ORT-optimised fp32 model and an int8 (QDQ) one; report speed and differences."""
    from app.inference.optimize import calibration_images, default_outputs, optimize_model

    written = default_outputs(path, out)
    if any(p.resolve() == path.resolve() for p in written[: 2 if int8 else 1]):
        raise typer.BadParameter("would overwrite the source model", param_hint="--out")
    if calibration_dir is not None:
        try:
            calibration_images(calibration_dir)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--calibration-dir") from None
    settings = get_settings()
    report = optimize_model(
        path,
        out=out,
        int8=int8,
        calibration_dir=calibration_dir,
        intra_op_threads=settings.intra_op_threads,
        score_threshold=settings.score_threshold,
        iou_threshold=settings.iou_threshold,
        labels_path=settings.labels_path,
        phone_classes=settings.phone_classes,
    )
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _echo_optimize_report(report)


@model_cli.command("list")
def model_list() -> None:
    """List the official models `model fetch` knows."""
    from app.inference.zoo import OFFICIAL_MODELS

    for entry in OFFICIAL_MODELS.values():
        typer.echo(f"{entry.name:<28} {entry.variant:<3} {entry.input_size_px:>4}  {entry.url}")


def _load_model(path: Path | None) -> "OnnxModel":
    from app.inference.model import OnnxModel

    settings = get_settings()
    chosen = path or settings.model_path
    if chosen is None:
        from app.inference.zoo import cached_path

        chosen = cached_path(settings.model_name, settings.model_cache_dir)
    return OnnxModel(
        chosen,
        intra_op_threads=settings.intra_op_threads,
        labels_path=settings.labels_path,
        phone_classes=settings.phone_classes,
    )


def _echo_result(path: Path, entry: dict[str, Any]) -> None:
    total = entry["timings_ms"].get("total", 0.0)
    typer.echo(
        f"{path}: {entry['count']} phone(s) in {entry['width']}x{entry['height']} ({total:.1f} ms)"
    )
    for det in entry["detections"]:
        box = det["box"]
        typer.echo(
            f"  {det['label']} {det['score']:.2f} "
            f"[{box['x1']:.0f}, {box['y1']:.0f}, {box['x2']:.0f}, {box['y2']:.0f}]"
        )


def _echo_optimize_report(report: dict[str, Any]) -> None:
    height, width = report["input_size"]
    runs, threads = report["timing_runs"], report["intra_op_threads"]
    typer.echo(
        f"{report['source']}: {report['variant']} {height}x{width}; batch 1, {threads} threads, "
        f"median of {runs} runs; differences on {report['held_out_frames']} held-out frames"
    )
    typer.echo(f"  fp32       {report['fp32']['latency_ms']:8.1f} ms/image")
    threshold = report["score_threshold"]
    for key, label in (("optimized", "optimized"), ("int8", "int8")):
        entry = report[key]
        if entry is None:
            continue
        speedup = report["fp32"]["latency_ms"] / entry["latency_ms"]
        dets = entry["detections"]
        typer.echo(
            f"  {label:<10} {entry['latency_ms']:8.1f} ms/image  x{speedup:.2f}  "
            f"max |score diff| {entry['max_score_diff']:.4f}  "
            f"max |box diff| {entry['max_box_diff_px']:.2f} px  "
            f"detections >= {threshold:g}: {dets['fp32']} fp32, {dets['this']} {label}, "
            f"{dets['differ']} differ"
        )
        typer.echo(f"  {'':<10} -> {entry['path']} ({entry['seconds']:.1f} s)")
    if report["calibration"] is not None:
        calibration = report["calibration"]
        typer.echo(f"  int8 calibrated on {calibration['frames']} frames ({calibration['source']})")


def _format(path: Path) -> str:
    return "PNG" if path.suffix.lower() == ".png" else "JPEG"


def _pick(given: _T | None, default: _T) -> _T:
    return default if given is None else given


def _fail(exc: DetectorError) -> None:
    typer.echo(f"error: {exc.message}", err=True)
    code = EXIT_FETCH if isinstance(exc, ModelFetchError) else EXIT_MODEL
    sys.exit(code if isinstance(exc, ModelError) else EXIT_BAD_IMAGE)
