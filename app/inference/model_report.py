"""A human- and JSON-friendly description of a model file (for `phone-detector model info`)."""

from pathlib import Path
from typing import Any

import onnx

from app.errors import ModelContractError
from app.inference.graph_stats import graph_stats
from app.inference.model import OnnxModel


def describe_model(path: Path, *, labels_path: Path | None = None) -> dict[str, Any]:
    """Contract-check `path` and report its size, cost and identity.

    Raises ModelNotFoundError / ModelContractError for a file that cannot be served.
    """
    model = OnnxModel(path, intra_op_threads=1, labels_path=labels_path)
    info = model.info
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises protobuf's DecodeError and others
        raise ModelContractError(f"{path} cannot be parsed as ONNX: {exc}") from exc
    stats = graph_stats(proto)
    return {
        "name": info.name,
        "path": str(path),
        "variant": info.variant,
        "synthetic": info.synthetic,
        "input_size": list(info.input_size_px),
        "num_classes": len(info.class_names),
        "class_names": info.class_names,
        "phone_classes": info.phone_class_names,
        "parameters": stats.params,
        "parameters_m": round(stats.params / 1e6, 2),
        "gflops": round(stats.flops / 1e9, 2),
        "opset": stats.opset,
        "dynamic_batch": info.dynamic_batch,
        "producer": proto.producer_name or info.metadata.get("producer", ""),
        "sha256": info.sha256,
    }
