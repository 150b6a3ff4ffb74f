"""Which model the service serves: configured path, cache, fetch, then a cached synthetic build."""

import logging
from pathlib import Path

import pytest

from app.errors import ModelNotFoundError
from app.inference.resolve import resolve_model_path, synthetic_model_path
from tests.utils.graphs import red_box_model, save
from tests.utils.service import make_settings


def test_configured_path_wins(tmp_path: Path) -> None:
    model = save(red_box_model(), tmp_path / "mine.onnx")

    assert resolve_model_path(make_settings(model_path=model)) == model


def test_configured_path_that_is_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model_path(make_settings(model_path=tmp_path / "gone.onnx"))


def test_cached_official_model_is_used(tmp_path: Path) -> None:
    cached = save(red_box_model(), tmp_path / "damoyolo_tinynasL25_S_460.onnx")

    chosen = resolve_model_path(make_settings(model_cache_dir=tmp_path))

    assert chosen == cached


def test_offline_builds_the_synthetic_model_once_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(model_cache_dir=tmp_path, synthetic_variant="N", allow_fetch=False)
    caplog.set_level(logging.WARNING)

    first = resolve_model_path(settings)
    built_at = first.stat().st_mtime_ns
    second = resolve_model_path(settings)

    assert first == second == synthetic_model_path(tmp_path, "N", 0)
    assert second.stat().st_mtime_ns == built_at  # reused, not rebuilt
    warnings = [r.getMessage() for r in caplog.records if "SYNTHETIC MODEL" in r.getMessage()]
    assert warnings
    assert "MEANINGLESS" in warnings[0]


def test_failed_fetch_falls_back_to_synthetic(tmp_path: Path) -> None:
    # An unknown official name fails at once, like a machine without network.
    settings = make_settings(
        model_cache_dir=tmp_path, model_name="no_such_model", synthetic_variant="N"
    )

    chosen = resolve_model_path(settings.model_copy(update={"allow_fetch": True}))

    assert chosen == synthetic_model_path(tmp_path, "N", 0)
