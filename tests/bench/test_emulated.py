"""The bench's accelerator-like model: a valid model for the service, with most of its work
done once per batch (what makes it a fair stand-in for a GPU's cost curve)."""

from pathlib import Path

import numpy as np

from app.inference.model import OnnxModel
from bench.emulated import INPUT_SIZE_PX, build_fixed_cost_model


def test_emulated_model_serves_through_the_model_contract(tmp_path: Path) -> None:
    path = tmp_path / "x.onnx"
    build_fixed_cost_model(path)
    model = OnnxModel(path, intra_op_threads=1)

    assert model.info.synthetic is True
    assert model.info.dynamic_batch is True
    assert model.info.input_size_px == (INPUT_SIZE_PX, INPUT_SIZE_PX)
    for size in (1, 3):
        scores, boxes = model.run(np.zeros((size, 3, INPUT_SIZE_PX, INPUT_SIZE_PX), np.uint8))
        assert scores.shape == (size, 1, 1)
        assert boxes.shape == (size, 1, 4)
