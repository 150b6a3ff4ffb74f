"""Shared fixtures: correctness-graph models on disk and a detector over them."""

from pathlib import Path

import pytest

from app.inference.detector import Detector
from app.inference.model import OnnxModel
from tests.utils.graphs import red_box_model, save


@pytest.fixture(scope="session")
def red_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The red-box graph at 640x640, 80 COCO classes, dynamic batch."""
    return save(red_box_model(), tmp_path_factory.mktemp("models") / "red_box.onnx")


@pytest.fixture(scope="session")
def red_model(red_model_path: Path) -> OnnxModel:
    return OnnxModel(red_model_path, intra_op_threads=1)


@pytest.fixture(scope="session")
def detector(red_model: OnnxModel) -> Detector:
    return Detector(red_model, max_image_pixels=50_000_000)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
