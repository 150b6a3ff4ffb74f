"""Frames stay uint8 until the model: the Cast prepended in memory changes no result."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from app.inference.builder import build_model_file
from app.inference.model import OnnxModel
from app.inference.preprocess import letterbox
from tests.utils.images import red_box_image


@pytest.fixture(scope="module")
def synthetic_n_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real N architecture (416 input): convolutions, not just the red-box arithmetic."""
    return build_model_file("N", tmp_path_factory.mktemp("n") / "synthetic_N.onnx")


@pytest.mark.slow
def test_uint8_frames_give_exactly_the_float_graphs_outputs(synthetic_n_path: Path) -> None:
    frames = np.random.default_rng(1).integers(0, 256, (2, 3, 416, 416), dtype=np.uint8)
    as_file = OnnxModel(synthetic_n_path, intra_op_threads=1, uint8_input=False)
    with_cast = OnnxModel(synthetic_n_path, intra_op_threads=1)

    want_scores, want_boxes = as_file.run(frames.astype(np.float32))
    got_scores, got_boxes = with_cast.run(frames)

    assert with_cast.input_dtype is np.uint8
    np.testing.assert_array_equal(got_scores, want_scores)
    np.testing.assert_array_equal(got_boxes, want_boxes)


def test_loading_leaves_the_model_file_unchanged(red_model_path: Path) -> None:
    before = hashlib.sha256(red_model_path.read_bytes()).hexdigest()

    model = OnnxModel(red_model_path, intra_op_threads=1)

    assert hashlib.sha256(red_model_path.read_bytes()).hexdigest() == before
    assert model.info.sha256 == before


def test_whole_valued_float_frames_are_accepted(red_model: OnnxModel) -> None:
    frames = np.random.default_rng(2).integers(0, 256, (1, 3, 640, 640), dtype=np.uint8)

    from_float = red_model.run(frames.astype(np.float32))
    from_uint8 = red_model.run(frames)

    for got, want in zip(from_float, from_uint8, strict=True):
        np.testing.assert_array_equal(got, want)


def test_fractional_float_frames_run_on_the_files_own_graph(red_model_path: Path) -> None:
    frames = np.full((1, 3, 640, 640), 127.5, np.float32)
    as_file = OnnxModel(red_model_path, intra_op_threads=1, uint8_input=False)
    with_cast = OnnxModel(red_model_path, intra_op_threads=1)

    for got, want in zip(with_cast.run(frames), as_file.run(frames), strict=True):
        np.testing.assert_array_equal(got, want)


def test_letterbox_emits_uint8_with_zero_padding() -> None:
    image = red_box_image((1280, 720), (0, 0, 10, 10))

    boxed = letterbox(image, original_size_px=(1280, 720), input_size_px=(640, 640))

    assert boxed.tensor.dtype == np.uint8
    assert boxed.tensor.shape == (3, 640, 640)
    assert not boxed.tensor[:, 360:, :].any()  # 720 * 0.5 = 360 rows of image, then padding
