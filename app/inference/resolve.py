"""Which model file to serve: configured path, then cache, then fetch, then a synthetic build."""

from pathlib import Path

from app.config import Settings
from app.errors import ModelFetchError, ModelNotFoundError
from app.telemetry.logging import get_logger

logger = get_logger(__name__)


def synthetic_model_path(cache_dir: Path, variant: str, seed: int, num_classes: int = 80) -> Path:
    """Cache location of a built network: same variant, seed and classes, same file."""
    return cache_dir / f"synthetic_damoyolo_{variant}_c{num_classes}_seed{seed}.onnx"


def resolve_model_path(settings: Settings) -> Path:
    """Return the ONNX file to serve, fetching or building one when nothing is configured.

    A configured path that does not exist is an error (no silent fallback). Otherwise the
    cached official model, then a download of it, then the synthetic network of
    `synthetic_variant`, built once and cached, with a loud warning that its detections
    are meaningless.
    """
    if settings.model_path is not None:
        if not settings.model_path.is_file():
            raise ModelNotFoundError(f"PHONE_DET_MODEL_PATH={settings.model_path} does not exist")
        return settings.model_path

    from app.inference.zoo import cached_path, fetch_model

    official = cached_path(settings.model_name, settings.model_cache_dir)
    if official.is_file():
        return official
    if settings.allow_fetch:
        try:
            return fetch_model(settings.model_name, settings.model_cache_dir, show_progress=False)
        except ModelFetchError as exc:
            logger.warning("cannot fetch %s: %s", settings.model_name, exc.message)

    synthetic = synthetic_model_path(
        settings.model_cache_dir, settings.synthetic_variant, settings.synthetic_seed
    )
    logger.warning(
        "SYNTHETIC MODEL: no official DAMO-YOLO weights available; serving a same-architecture "
        "DAMO-YOLO-%s with seeded weights (%s). Its speed and memory are real, its detections "
        "are MEANINGLESS. Set PHONE_DET_MODEL_PATH to a real export for real detections.",
        settings.synthetic_variant,
        synthetic,
    )
    if not synthetic.is_file():
        from app.inference.builder import build_model_file

        build_model_file(settings.synthetic_variant, synthetic, seed=settings.synthetic_seed)
    return synthetic
