"""LitServe peer: decode in the worker, LitServe's own batching (max_batch_size, batch_timeout)."""

from typing import Any

import litserve as ls
from fastapi import Request

from bench.peers import _shared


class PhoneDetectorAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        self.detector = _shared.load_detector()

    # Annotated as Request so LitServe hands over the parsed multipart form.
    def decode_request(self, request: Request) -> Any:
        return self.detector.prepare(request["file"].file.read())  # type: ignore[index]

    def batch(self, inputs: list[Any]) -> list[Any]:
        return inputs

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]:
        return _shared.detect_prepared(self.detector, prepared)

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return {"results": [output]}


if __name__ == "__main__":
    api = PhoneDetectorAPI(
        max_batch_size=_shared.max_batch_size(),
        batch_timeout=_shared.BATCH_WAIT_S,
        api_path="/detect",
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=_shared.port(), generate_client_file=False)
