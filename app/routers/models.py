"""GET /v1/models: the loaded detection model and how it is served."""

from fastapi import APIRouter

from app.inference.batch_window import AdaptiveWindow
from app.routers.deps import RuntimeDep
from app.schemas import BatcherSettings, ModelDescription, ModelsResponse

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ModelsResponse)
async def list_models(runtime: RuntimeDep) -> ModelsResponse:
    """The model being served: identity, input size, phone classes, synthetic flag, batching."""
    pipeline = runtime.require_pipeline()
    info = pipeline.detector.model.info
    window = pipeline.batcher.window
    cost = window.cost if isinstance(window, AdaptiveWindow) else None
    per_frame = pipeline.batcher.seconds_per_frame
    settings = runtime.settings
    return ModelsResponse(
        models=[
            ModelDescription(
                name=info.name,
                variant=info.variant,
                input_size=info.input_size_px,
                num_classes=len(info.class_names),
                phone_classes=info.phone_class_names,
                synthetic=info.synthetic,
                sha256=info.sha256,
                execution_provider=info.provider,
                dynamic_batch=info.dynamic_batch,
                batcher=BatcherSettings(
                    max_batch_size=settings.max_batch_size,
                    batch_window=settings.batch_window,
                    max_wait_ms=settings.max_wait_ms,
                    window_ms=_ms(window.window_s(1)),
                    batch_fixed_ms=_ms(cost.fixed_s) if cost else None,
                    batch_per_frame_ms=_ms(cost.per_frame_s) if cost else None,
                    queue_size=settings.queue_size,
                    queue_capacity=pipeline.batcher.capacity,
                    model_ms_per_frame=_ms(per_frame) if per_frame is not None else None,
                    deadline_ms=settings.deadline_ms,
                ),
            )
        ]
    )


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
