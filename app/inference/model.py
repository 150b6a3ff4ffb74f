"""Load a DAMO-YOLO ONNX export into onnxruntime, check its contract, run batches.

The contract (DAMO-YOLO tools/converter.py without --end2end): one input [B, 3, H, W]
float32 RGB 0-255; two outputs, `scores` [B, N, C] (sigmoid applied) and `boxes` [B, N, 4]
(x1, y1, x2, y2 in input pixels). B is 1 in official exports and symbolic in ours.

The file is never changed, but the loaded graph gets a uint8 -> float32 Cast in front of
its input: frames stay uint8 from the decoder to the model, a quarter of the bytes to
letterbox, queue and stack, and the values the network sees are exactly the same.
"""

import hashlib
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from app.errors import InferenceFailedError, ModelContractError, ModelNotFoundError
from app.inference.labels import class_names_for, default_phone_classes

_EXPECTED = (
    "expected a DAMO-YOLO ONNX export (tools/converter.py without --end2end): "
    "input [1, 3, H, W] float32; outputs scores [1, N, C] and boxes [1, N, 4]"
)
_VARIANT_IN_NAME = re.compile(r"_([NTSML][sml]?)(?:_\d+)?$")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the service and CLI report about a loaded model."""

    name: str
    path: Path
    variant: str
    input_size_px: tuple[int, int]  # (H, W)
    class_names: list[str]
    phone_class_ids: list[int]
    synthetic: bool
    sha256: str
    dynamic_batch: bool
    provider: str
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def phone_class_names(self) -> list[str]:
        return [self.class_names[i] for i in self.phone_class_ids]


class OnnxModel:
    """One onnxruntime session over a contract-checked DAMO-YOLO model.

    `run(batch)` is thread-safe (onnxruntime sessions are); a fixed batch-1 export runs a
    larger batch frame by frame. With `uint8_input` (the default) the session takes uint8
    frames; float32 frames with whole 0-255 values are accepted too and give the same result.
    """

    def __init__(
        self,
        path: Path,
        *,
        intra_op_threads: int = 2,
        labels_path: Path | None = None,
        phone_classes: list[str] | None = None,
        uint8_input: bool = True,
    ) -> None:
        if not path.is_file():
            raise ModelNotFoundError(f"model file not found: {path}")
        self._path = path
        self._options = _session_options(intra_op_threads)
        try:
            source: str | bytes = str(path)
            self.input_dtype: type[np.uint8] | type[np.float32] = np.float32
            if uint8_input:
                prepended = _with_uint8_input(path)
                if prepended is not None:
                    source, self.input_dtype = prepended, np.uint8
            self._session = ort.InferenceSession(
                source, sess_options=self._options, providers=["CPUExecutionProvider"]
            )
            del source
        except Exception as exc:  # onnx/onnxruntime raise their own untyped errors for bad files
            raise ModelContractError(f"{path} is not a loadable ONNX model; {_EXPECTED}") from exc
        self._float_session: ort.InferenceSession | None = None
        self._input_name, input_size, self._dynamic_batch = _check_input(
            self._session, path, uint8=self.input_dtype is np.uint8
        )
        self._output_names, num_classes = _check_outputs(self._session, path)
        metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        try:
            names = class_names_for(
                num_classes, metadata_names=metadata.get("names"), labels_path=labels_path
            )
        except (ValueError, OSError) as exc:
            raise ModelContractError(f"class names for {path}: {exc}") from exc
        self.info = ModelInfo(
            name=path.stem,
            path=path,
            variant=metadata.get("variant") or _variant_from_name(path.stem),
            input_size_px=input_size,
            class_names=names,
            phone_class_ids=_phone_class_ids(names, phone_classes or []),
            synthetic=metadata.get("synthetic", "").lower() == "true",
            sha256=_sha256(path),
            dynamic_batch=self._dynamic_batch,
            provider=self._session.get_providers()[0],
            metadata=metadata,
        )

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[B, 3, H, W] uint8 or float32 (RGB 0-255) -> (scores [B, N, C], boxes [B, N, 4]).

        Raises InferenceFailedError when onnxruntime fails or returns a wrong batch size.
        """
        try:
            session, batch = self._session_for(batch)
            if self._dynamic_batch or batch.shape[0] == 1:
                scores, boxes = session.run(self._output_names, {self._input_name: batch})
            else:
                parts = [
                    session.run(self._output_names, {self._input_name: batch[i : i + 1]})
                    for i in range(batch.shape[0])
                ]
                scores = np.concatenate([p[0] for p in parts])
                boxes = np.concatenate([p[1] for p in parts])
        except Exception as exc:
            raise InferenceFailedError(f"model failed on a batch of {batch.shape[0]}") from exc
        if scores.shape[0] != batch.shape[0] or boxes.shape[0] != batch.shape[0]:
            raise InferenceFailedError(
                f"model returned {scores.shape[0]} results for a batch of {batch.shape[0]}"
            )
        return scores, boxes

    def _session_for(self, batch: np.ndarray) -> tuple[ort.InferenceSession, np.ndarray]:
        """The session that takes `batch` as it is, converting only when exact."""
        if batch.dtype == self.input_dtype:
            return self._session, batch
        if self.input_dtype is np.float32:
            return self._session, batch.astype(np.float32)
        if batch.dtype == np.uint8:
            return self._session, batch
        as_uint8 = np.clip(batch, 0, 255).astype(np.uint8)
        if np.array_equal(as_uint8, batch):
            return self._session, as_uint8
        # Fractional or out-of-range values (not from our decoder): the file's own graph.
        if self._float_session is None:
            self._float_session = ort.InferenceSession(
                str(self._path), sess_options=self._options, providers=["CPUExecutionProvider"]
            )
        return self._float_session, batch.astype(np.float32, copy=False)


def _session_options(intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle intra-op threads otherwise spin for a while after each batch; on a small machine
    # that steals the cores the decode threads and the event loop need between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # Memory: the default arena grows to the next power of two and memory patterns are kept
    # per batch shape; with a tight arena and no patterns synthetic S peaks ~120 MB lower
    # (402 -> 284 MB at batch 2, onnxruntime alone) at the same speed.
    _register_tight_arena()
    options.add_session_config_entry("session.use_env_allocators", "1")
    options.enable_mem_pattern = False
    return options


_arena_lock = threading.Lock()
_arena_registered = False


def _register_tight_arena() -> None:
    """Once per process: a CPU arena that grows by what a run asks for (kSameAsRequested)."""
    global _arena_registered
    with _arena_lock:
        if _arena_registered:
            return
        memory = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        # max_mem 0 = no cap, extend strategy 1 = kSameAsRequested, -1 = defaults
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, 1, -1, -1))
        _arena_registered = True


def _with_uint8_input(path: Path) -> bytes | None:
    """The model with a uint8 input Cast to its float32 one, or None if it has no such input.

    Only a single float32 rank-4 input is rewritten; anything else is left for the contract
    check to describe.
    """
    model = onnx.load(str(path))
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        return None
    original = inputs[0]
    tensor_type = original.type.tensor_type
    if tensor_type.elem_type != TensorProto.FLOAT or len(tensor_type.shape.dim) != 4:
        return None
    name = original.name
    # The uint8 input takes the original name, so callers and error messages see no change;
    # the float tensor the network reads gets a private name.
    float_name = f"{name}__float32"
    for node in graph.node:
        node.input[:] = [float_name if x == name else x for x in node.input]
    for output in graph.output:
        if output.name == name:
            return None
    tensor_type.elem_type = TensorProto.UINT8
    graph.node.insert(0, helper.make_node("Cast", [name], [float_name], to=TensorProto.FLOAT))
    serialized: bytes = model.SerializeToString()
    return serialized


def _check_input(
    session: ort.InferenceSession, path: Path, *, uint8: bool = False
) -> tuple[str, tuple[int, int], bool]:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelContractError(f"{path} has {len(inputs)} inputs; {_EXPECTED}")
    spec = inputs[0]
    shape = spec.shape
    expected_type = "tensor(uint8)" if uint8 else "tensor(float)"
    if spec.type != expected_type or len(shape) != 4 or shape[1] != 3:
        raise ModelContractError(f"{path} input {spec.name!r} is {spec.type} {shape}; {_EXPECTED}")
    height, width = shape[2], shape[3]
    if not isinstance(height, int) or not isinstance(width, int):
        raise ModelContractError(
            f"{path} input {spec.name!r} has a dynamic size {shape}; export it with a fixed "
            "--img_size"
        )
    batch_dim = shape[0]
    dynamic_batch = not (isinstance(batch_dim, int) and batch_dim == 1)
    return spec.name, (height, width), dynamic_batch


def _check_outputs(session: ort.InferenceSession, path: Path) -> tuple[list[str], int]:
    outputs = session.get_outputs()
    described = ", ".join(f"{o.name} {o.shape}" for o in outputs)
    if len(outputs) != 2:
        hint = " (this looks like an --end2end export with NMS inside)" if len(outputs) == 4 else ""
        raise ModelContractError(
            f"{path} has {len(outputs)} outputs ({described}){hint}; {_EXPECTED}"
        )
    by_name = {o.name: o for o in outputs}
    if {"scores", "boxes"} <= by_name.keys():
        scores_spec, boxes_spec = by_name["scores"], by_name["boxes"]
    else:
        # Older exports name outputs by number; the boxes output is the one ending in 4.
        first, second = outputs
        scores_spec, boxes_spec = (second, first) if first.shape[-1] == 4 else (first, second)
    if (
        len(scores_spec.shape) != 3
        or len(boxes_spec.shape) != 3
        or boxes_spec.shape[-1] != 4
        or not isinstance(scores_spec.shape[-1], int)
        or scores_spec.type != "tensor(float)"
        or boxes_spec.type != "tensor(float)"
    ):
        raise ModelContractError(f"{path} outputs are {described}; {_EXPECTED}")
    return [scores_spec.name, boxes_spec.name], int(scores_spec.shape[-1])


def _phone_class_ids(names: list[str], configured: list[str]) -> list[int]:
    if not configured:
        ids = default_phone_classes(names)
        if not ids:
            raise ModelContractError(
                "no class of this model is a phone by default; set PHONE_DET_PHONE_CLASSES"
            )
        return ids
    lowered = [n.lower() for n in names]
    ids = []
    for wanted in configured:
        if wanted.isdigit() and int(wanted) < len(names):
            ids.append(int(wanted))
        elif wanted.lower() in lowered:
            ids.append(lowered.index(wanted.lower()))
        else:
            raise ModelContractError(f"phone class {wanted!r} is not a class of this model")
    return sorted(set(ids))


def _variant_from_name(stem: str) -> str:
    match = _VARIANT_IN_NAME.search(stem)
    return match.group(1) if match else "custom"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
