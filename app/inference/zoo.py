"""The official DAMO-YOLO ONNX exports: where they live, the local cache, and fetching them."""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx
from tqdm import tqdm

from app.errors import DetectorError, ModelFetchError

_BASE = "https://idstcv.oss-cn-zhangjiakou.aliyuncs.com/DAMO-YOLO/release_model/onnx"


@dataclass(frozen=True, slots=True)
class OfficialModel:
    """One downloadable export from the DAMO-YOLO README's model-zoo table."""

    name: str
    variant: str
    input_size_px: int
    url: str


def _official(name: str, variant: str, input_size_px: int, folder: str = "") -> OfficialModel:
    return OfficialModel(name, variant, input_size_px, f"{_BASE}/{folder}{name}.onnx")


OFFICIAL_MODELS: dict[str, OfficialModel] = {
    m.name: m
    for m in (
        _official("damoyolo_tinynasL20_T_420", "T", 640),
        _official("damoyolo_tinynasL20_T_436", "T", 640),
        _official("damoyolo_tinynasL25_S_460", "S", 640),
        _official("damoyolo_tinynasL25_S_477", "S", 640),
        _official("damoyolo_tinynasL35_M_492", "M", 640),
        _official("damoyolo_tinynasL35_M_502", "M", 640),
        _official("damoyolo_tinynasL20_N_351", "N", 416),
        _official("damoyolo_tinynasL18_Ns", "Ns", 416, "before_distill/"),
        _official("damoyolo_tinynasL18_Nm", "Nm", 416, "before_distill/"),
        _official("damoyolo_tinynasL20_Nl", "Nl", 416, "before_distill/"),
    )
}

# A dead network should fail in seconds, not hang start-up; a slow one may still stream.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0


def cached_path(name: str, cache_dir: Path) -> Path:
    """Where the official model `name` lives once fetched."""
    return cache_dir / f"{name}.onnx"


def fetch_model(
    name: str,
    out_dir: Path,
    *,
    url: str | None = None,
    show_progress: bool = True,
    client: httpx.Client | None = None,
) -> Path:
    """Download an official export into `out_dir`, verify its contract, return its path.

    The file appears under its final name only when complete and valid (temporary file,
    then rename); on any failure nothing is left behind and ModelFetchError is raised.
    """
    if url is None:
        if name not in OFFICIAL_MODELS:
            known = ", ".join(sorted(OFFICIAL_MODELS))
            raise ModelFetchError(f"unknown model {name!r}; known models: {known}")
        url = OFFICIAL_MODELS[name].url
    out_dir.mkdir(parents=True, exist_ok=True)
    target = cached_path(name, out_dir)
    handle, temp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=out_dir)
    temp_path = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as sink:
            _download(url, sink, show_progress=show_progress, client=client)
        _verify_contract(temp_path, name)
        os.replace(temp_path, target)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    return target


def _download(
    url: str, sink: BinaryIO, *, show_progress: bool, client: httpx.Client | None
) -> None:
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    own_client = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=True)
    try:
        with http.stream("GET", url) as response:
            if response.status_code != 200:
                raise ModelFetchError(f"download of {url} failed: HTTP {response.status_code}")
            total = int(response.headers.get("content-length", 0)) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, disable=not show_progress, leave=False
            ) as bar:
                for chunk in response.iter_bytes(1 << 16):
                    sink.write(chunk)
                    bar.update(len(chunk))
    except httpx.HTTPError as exc:
        raise ModelFetchError(f"cannot download {url}: {type(exc).__name__}: {exc}") from exc
    finally:
        if own_client:
            http.close()


def _verify_contract(path: Path, name: str) -> None:
    from app.inference.model import OnnxModel  # onnxruntime import only when needed

    try:
        OnnxModel(path, intra_op_threads=1)
    except DetectorError as exc:
        raise ModelFetchError(f"downloaded {name} is not a usable model: {exc.message}") from exc
