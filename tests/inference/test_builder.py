"""Synthetic DAMO-YOLO builder: size/cost against the published table, ONNX contract,
determinism and detector-like outputs."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.inference.builder import VARIANTS, build_model, build_model_file
from app.inference.graph_stats import GraphStats, graph_stats
from app.inference.labels import COCO80_NAMES

SCORE_THRESHOLD = 0.35
MAX_HITS = 100  # anchors above the threshold on one image: "a handful", never thousands


def _anchors(size: int) -> int:
    return sum((size // stride) ** 2 for stride in (8, 16, 32))


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _noise(batch: int, size: int, seed: int = 1) -> np.ndarray:
    return (
        np.random.default_rng(seed).uniform(0.0, 255.0, (batch, 3, size, size)).astype(np.float32)
    )


def _scene(size: int) -> np.ndarray:
    """A natural-ish picture: gradients, a soft pattern and a few flat rectangles."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([255 * x, 255 * y, 128 + 100 * np.sin(10 * x) * np.cos(7 * y)])
    rng = np.random.default_rng(5)
    for _ in range(5):
        top, left = rng.integers(0, size * 3 // 4, 2)
        h, w = rng.integers(size // 12, size // 3, 2)
        img[:, top : top + h, left : left + w] = rng.uniform(0, 255, (3, 1, 1))
    return img[None].astype(np.float32)


@pytest.fixture(scope="module")
def nano() -> onnx.ModelProto:
    return build_model("N", seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_size_and_cost_match_the_published_table(variant: str) -> None:
    spec = VARIANTS[variant]
    stats = graph_stats(build_model(variant))
    assert stats.opset == 17
    assert stats.params / 1e6 == pytest.approx(spec.published_params_m, rel=0.05)
    assert stats.flops / 1e9 == pytest.approx(spec.published_gflops, rel=0.05)


def test_variant_specs() -> None:
    assert set(VARIANTS) == {"N", "T", "S", "M"}
    assert VARIANTS["N"].input_size_px == 416
    assert all(VARIANTS[v].input_size_px == 640 for v in "TSM")
    assert VARIANTS["S"].official_name == "damoyolo_tinynasL25_S"
    assert all(v.name == key for key, v in VARIANTS.items())


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="variant"):
        build_model("XL")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("N", num_classes=0)


def test_contract_and_metadata(nano: onnx.ModelProto) -> None:
    onnx.checker.check_model(nano, full_check=True)
    (image,) = nano.graph.input
    dims = image.type.tensor_type.shape.dim
    assert image.name == "images"
    assert image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [3, 416, 416]
    assert [o.name for o in nano.graph.output] == ["scores", "boxes"]
    meta = {p.key: p.value for p in nano.metadata_props}
    assert meta["synthetic"] == "true"
    assert meta["variant"] == "N"
    assert meta["seed"] == "0"
    assert meta["input_size"] == "416"
    assert meta["producer"] == "phone-detector"
    assert json.loads(meta["names"]) == list(COCO80_NAMES)
    assert len(COCO80_NAMES) == 80
    assert COCO80_NAMES[67] == "cell phone"


@pytest.mark.parametrize("batch", [1, 2])
def test_runs_with_dynamic_batch(nano: onnx.ModelProto, batch: int) -> None:
    scores, boxes = _session(nano).run(None, {"images": _noise(batch, 416)})
    anchors = _anchors(416)
    assert scores.shape == (batch, anchors, 80)
    assert boxes.shape == (batch, anchors, 4)
    assert scores.dtype == boxes.dtype == np.float32
    assert np.isfinite(scores).all()
    assert np.isfinite(boxes).all()
    assert scores.min() >= 0.0
    assert scores.max() <= 1.0
    assert (boxes[..., 2] >= boxes[..., 0]).all()
    assert (boxes[..., 3] >= boxes[..., 1]).all()
    hits_per_image = (scores.max(axis=-1) > SCORE_THRESHOLD).sum(axis=1)
    assert (hits_per_image < MAX_HITS).all()


def test_batch_items_are_independent(nano: onnx.ModelProto) -> None:
    session = _session(nano)
    images = np.concatenate([_noise(1, 416), _scene(416)])
    batched, _ = session.run(None, {"images": images})
    single, _ = session.run(None, {"images": images[1:]})
    np.testing.assert_allclose(batched[1], single[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("picture", ["scene", "black", "white"])
def test_few_detections_on_plain_pictures(nano: onnx.ModelProto, picture: str) -> None:
    images = {
        "scene": _scene(416),
        "black": np.zeros((1, 3, 416, 416), np.float32),
        "white": np.full((1, 3, 416, 416), 255.0, np.float32),
    }[picture]
    scores, boxes = _session(nano).run(None, {"images": images})
    assert np.isfinite(boxes).all()
    assert (scores.max(axis=-1) > SCORE_THRESHOLD).sum() < MAX_HITS


@pytest.mark.slow
def test_s_runs_at_640() -> None:
    scores, boxes = _session(build_model("S")).run(None, {"images": _scene(640)})
    assert scores.shape == (1, 8400, 80)
    assert boxes.shape == (1, 8400, 4)
    assert np.isfinite(scores).all()
    assert np.isfinite(boxes).all()
    assert (scores.max(axis=-1) > SCORE_THRESHOLD).sum() < MAX_HITS


def test_single_class_model() -> None:
    model = build_model("N", num_classes=1)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["names"]) == ["phone"]
    scores, boxes = _session(model).run(None, {"images": _noise(1, 416)})
    assert scores.shape == (1, _anchors(416), 1)
    assert boxes.shape == (1, _anchors(416), 4)


def test_file_is_deterministic_and_seeded(tmp_path: Path) -> None:
    first = build_model_file("N", tmp_path / "a" / "n.onnx", seed=3)
    second = build_model_file("N", tmp_path / "b.onnx", seed=3)
    other = build_model_file("N", tmp_path / "c.onnx", seed=4)
    assert first == tmp_path / "a" / "n.onnx"
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.onnx", "c.onnx", "n.onnx"]
    loaded = onnx.load(str(first))
    assert {p.key: p.value for p in loaded.metadata_props}["seed"] == "3"
    weights_3 = {t.name: t.raw_data for t in loaded.graph.initializer}
    weights_4 = {t.name: t.raw_data for t in onnx.load(str(other)).graph.initializer}
    assert weights_3.keys() == weights_4.keys()
    assert any(weights_3[k] != weights_4[k] for k in weights_3)


def test_graph_stats_counts_a_tiny_conv() -> None:
    # 1x3x8x8 input, Conv 3->4 3x3 pad 1 (+bias), depthwise 4->4 3x3 stride 2: hand-counted.
    w1 = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w1")
    b1 = numpy_helper.from_array(np.zeros(4, np.float32), "b1")
    w2 = numpy_helper.from_array(np.zeros((4, 1, 3, 3), np.float32), "w2")
    shape = numpy_helper.from_array(np.array([-1, 64], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["y", "w2"], ["z"], pads=[1, 1, 1, 1], strides=[2, 2], group=4),
        helper.make_node("Reshape", ["z", "shape"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [w1, b1, w2, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    macs = 4 * 8 * 8 * 3 * 9 + 4 * 4 * 4 * 1 * 9
    assert graph_stats(model) == GraphStats(params=108 + 4 + 36, flops=2 * macs, opset=13)
