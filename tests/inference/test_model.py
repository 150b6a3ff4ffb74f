"""Loading models: the contract is checked, and bad files are refused with clear messages."""

import json
from pathlib import Path

import numpy as np
import pytest

from app.errors import ModelContractError, ModelNotFoundError
from app.inference.model import OnnxModel
from tests.utils.graphs import end2end_like_model, red_box_model, save


def test_reads_input_size_classes_and_phone_class(red_model: OnnxModel) -> None:
    info = red_model.info

    assert info.input_size_px == (640, 640)
    assert len(info.class_names) == 80
    assert info.phone_class_ids == [67]
    assert info.phone_class_names == ["cell phone"]
    assert info.dynamic_batch
    assert not info.synthetic
    assert len(info.sha256) == 64


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        OnnxModel(tmp_path / "nope.onnx")


def test_non_onnx_file_is_refused_with_the_expected_contract(tmp_path: Path) -> None:
    path = tmp_path / "photo.onnx"
    path.write_bytes(b"\xff\xd8\xff\xe0 this is a JPEG, not a model")

    with pytest.raises(
        ModelContractError, match=r"not a loadable ONNX model.*expected a DAMO-YOLO"
    ):
        OnnxModel(path)


def test_end2end_export_is_refused_naming_the_problem(tmp_path: Path) -> None:
    path = save(end2end_like_model(), tmp_path / "e2e.onnx")

    with pytest.raises(ModelContractError, match=r"4 outputs.*end2end.*expected"):
        OnnxModel(path)


def test_single_class_model_counts_its_class_as_phone(tmp_path: Path) -> None:
    path = save(red_box_model(num_classes=1, phone_class=0, decoy_class=None), tmp_path / "m.onnx")

    info = OnnxModel(path).info

    assert info.class_names == ["phone"]
    assert info.phone_class_ids == [0]


def test_names_and_synthetic_flag_come_from_metadata(tmp_path: Path) -> None:
    names = [f"thing{i}" for i in range(5)] + ["mobile phone"]
    model = red_box_model(
        num_classes=6,
        phone_class=5,
        decoy_class=0,
        metadata={"names": json.dumps(names), "synthetic": "true", "variant": "S"},
    )

    info = OnnxModel(save(model, tmp_path / "m.onnx")).info

    assert info.class_names == names
    assert info.phone_class_ids == [5]
    assert info.synthetic
    assert info.variant == "S"


def test_labels_file_and_configured_phone_classes(tmp_path: Path) -> None:
    path = save(red_box_model(num_classes=3, phone_class=1, decoy_class=2), tmp_path / "m.onnx")
    labels = tmp_path / "labels.txt"
    labels.write_text("person\nsmartphone\ntablet\n")

    info = OnnxModel(path, labels_path=labels, phone_classes=["smartphone", "tablet"]).info

    assert info.class_names == ["person", "smartphone", "tablet"]
    assert info.phone_class_ids == [1, 2]


def test_unknown_phone_class_is_refused(red_model_path: Path) -> None:
    with pytest.raises(ModelContractError, match="'walkie talkie' is not a class"):
        OnnxModel(red_model_path, phone_classes=["walkie talkie"])


def test_fixed_batch_export_runs_a_batch_frame_by_frame(tmp_path: Path) -> None:
    fixed = OnnxModel(save(red_box_model(dynamic_batch=False), tmp_path / "fixed.onnx"))
    batch = np.zeros((3, 3, 640, 640), np.float32)
    batch[1, 0, 10:20, 30:40] = 255.0

    scores, boxes = fixed.run(batch)

    assert not fixed.info.dynamic_batch
    assert scores.shape == (3, 2, 80)
    assert boxes.shape == (3, 2, 4)
    assert boxes[1, 0].tolist() == [30, 10, 40, 20]
    assert scores[0, 0, 67] == 0.0
    assert scores[1, 0, 67] == pytest.approx(0.9)


def test_variant_is_guessed_from_official_file_names(tmp_path: Path) -> None:
    path = save(red_box_model(), tmp_path / "damoyolo_tinynasL25_S_460.onnx")

    assert OnnxModel(path).info.variant == "S"
