"""Every error a client or operator can see, each with a stable `code` and an HTTP status.

DetectorError                      500 internal_error
├── ModelError                     500 model_error
│   ├── ModelNotFoundError         500 model_not_found
│   ├── ModelContractError         500 model_contract
│   ├── ModelFetchError            502 fetch_failed
│   └── InferenceFailedError       500 model_error
├── UnauthorizedError              401 unauthorized
├── BadRequestError                400 bad_request
│   ├── ImageDecodeError           400 bad_image
│   ├── InvalidBase64Error         400 invalid_base64
│   ├── NoImagesError              400 no_images
│   ├── TooManyFilesError          413 too_many_files
│   ├── ImageTooLargeError         413 too_large
│   ├── UnsupportedFormatError     415 unsupported_format
│   ├── InvalidOptionError         422 invalid_request
│   └── InvalidSourceError         422 invalid_source
├── SourceNotFoundError            404 source_not_found
├── SourceExistsError              409 source_exists
├── TooManySourcesError            409 too_many_sources
├── QueueFullError                 503 queue_full
├── ShuttingDownError              503 shutting_down
├── ModelNotReadyError             503 not_ready
├── DeadlineExceededError          504 timeout
└── ClientDisconnectedError        499 client_disconnected

Routers and inference raise these; one handler renders them as
`{"error": {"code": ..., "message": ...}}`. This module imports nothing from `app`.
"""


class DetectorError(Exception):
    """Base of every error this service reports; `message` is safe to show a client."""

    code = "internal_error"
    http_status = 500

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class ModelError(DetectorError):
    """The model could not be loaded, fetched or run."""

    code = "model_error"


class ModelNotFoundError(ModelError):
    """The configured model file does not exist."""

    code = "model_not_found"


class ModelContractError(ModelError):
    """The file is not ONNX, or not a DAMO-YOLO export with the `scores`/`boxes` contract."""

    code = "model_contract"


class ModelFetchError(ModelError):
    """An official model could not be downloaded (no network, HTTP error, bad file)."""

    code = "fetch_failed"
    http_status = 502


class InferenceFailedError(ModelError):
    """onnxruntime raised while running a batch."""

    code = "model_error"


class UnauthorizedError(DetectorError):
    """No API key, or not one of the configured keys."""

    code = "unauthorized"
    http_status = 401


class BadRequestError(DetectorError):
    """The request itself is wrong; retrying it unchanged will fail again."""

    code = "bad_request"
    http_status = 400


class ImageDecodeError(BadRequestError):
    """The bytes look like a supported format but cannot be decoded (truncated, corrupt)."""

    code = "bad_image"


class InvalidBase64Error(BadRequestError):
    """A base64 image payload is not valid base64."""

    code = "invalid_base64"


class NoImagesError(BadRequestError):
    """The request carried no image at all."""

    code = "no_images"


class TooManyFilesError(BadRequestError):
    """More images in one request than `max_files_per_request`."""

    code = "too_many_files"
    http_status = 413


class ImageTooLargeError(BadRequestError):
    """An upload over the byte limit or an image over the pixel limit."""

    code = "too_large"
    http_status = 413


class UnsupportedFormatError(BadRequestError):
    """The bytes are not an image format this service decodes."""

    code = "unsupported_format"
    http_status = 415


class InvalidOptionError(BadRequestError):
    """A request option (threshold, count, field type) is out of range or malformed."""

    code = "invalid_request"
    http_status = 422


class InvalidSourceError(BadRequestError):
    """A camera source's definition is wrong: URL scheme, a file outside the media folder,
    fps or roi out of range."""

    code = "invalid_source"
    http_status = 422


class SourceNotFoundError(DetectorError):
    """No camera source has this id."""

    code = "source_not_found"
    http_status = 404


class SourceExistsError(DetectorError):
    """A camera source with this id already exists; delete it first to replace it."""

    code = "source_exists"
    http_status = 409


class TooManySourcesError(DetectorError):
    """The service already reads `max_camera_sources` sources."""

    code = "too_many_sources"
    http_status = 409


class QueueFullError(DetectorError):
    """The batch queue is at `queue_size`; the client should retry after `retry_after_s`."""

    code = "queue_full"
    http_status = 503


class ShuttingDownError(DetectorError):
    """The service is draining for shutdown and accepts no new work."""

    code = "shutting_down"
    http_status = 503


class ModelNotReadyError(DetectorError):
    """The model is not loaded or warmed up yet."""

    code = "not_ready"
    http_status = 503


class DeadlineExceededError(DetectorError):
    """The request was not answered within `deadline_ms`."""

    code = "timeout"
    http_status = 504


class ClientDisconnectedError(DetectorError):
    """The client went away before its answer was ready; nobody reads this response."""

    code = "client_disconnected"
    http_status = 499  # nginx's "client closed request"
