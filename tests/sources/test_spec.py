"""Source definitions: where a URL may point, credential masking, the YAML file."""

import os
from pathlib import Path

import pytest

from app.errors import InvalidSourceError
from app.sources.spec import SourceSpec, load_sources_file, mask_url, resolve_url


@pytest.fixture
def media(tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "hall.mp4").write_bytes(b"x")
    (folder / "sub").mkdir()
    (folder / "sub" / "row.mp4").write_bytes(b"x")
    (tmp_path / "secret.mp4").write_bytes(b"x")
    os.symlink(tmp_path / "secret.mp4", folder / "link.mp4")
    return folder


def test_api_file_sources_resolve_only_inside_the_media_folder(media: Path) -> None:
    hall = resolve_url("hall.mp4", origin="api", media_dir=media)
    row = resolve_url("sub/row.mp4", origin="api", media_dir=media)

    assert hall.target == f"file:{(media / 'hall.mp4').resolve()}"
    assert hall.is_file
    assert hall.protocols == "file"
    assert row.target.endswith("sub/row.mp4")


@pytest.mark.parametrize(
    "url",
    [
        "../secret.mp4",
        "sub/../../secret.mp4",
        "link.mp4",  # a symlink that leads out of the folder
        "/etc/passwd",
        "file:///etc/passwd",
        "file:hall.mp4",
        "concat:hall.mp4|hall.mp4",
        "subfile,,start,0,end,0,,:hall.mp4",
        "missing.mp4",
        "sub",
        "",
    ],
)
def test_api_cannot_choose_a_path_outside_the_media_folder(media: Path, url: str) -> None:
    with pytest.raises(InvalidSourceError):
        resolve_url(url, origin="api", media_dir=media)


def test_api_file_sources_need_a_media_folder(media: Path) -> None:
    with pytest.raises(InvalidSourceError, match="PHONE_DET_MEDIA_DIR"):
        resolve_url("hall.mp4", origin="api", media_dir=None)


def test_network_urls_get_a_protocol_allow_list() -> None:
    rtsp = resolve_url("rtsp://cam.local/live", origin="api", media_dir=None)
    http = resolve_url("https://cam.local/mjpeg", origin="api", media_dir=None)

    assert "file" not in rtsp.protocols.split(",")
    assert "file" not in http.protocols.split(",")
    assert not rtsp.is_file


@pytest.mark.parametrize("url", ["ftp://cam/x", "gopher://x", "rtsp:///nohost"])
def test_unsupported_schemes_are_refused_even_from_the_config_file(url: str) -> None:
    with pytest.raises(InvalidSourceError):
        resolve_url(url, origin="config", media_dir=None, base_dir=Path("/srv"))


def test_config_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    relative = resolve_url("clips/a.mp4", origin="config", media_dir=None, base_dir=tmp_path)
    absolute = resolve_url("file:///data/b.mp4", origin="config", media_dir=None)

    assert relative.target == f"file:{tmp_path / 'clips/a.mp4'}"
    assert absolute.target == "file:/data/b.mp4"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rtsp://admin:pw@10.0.0.2:554/s1", "rtsp://***@10.0.0.2:554/s1"),
        ("rtsp://admin@10.0.0.2/s1", "rtsp://***@10.0.0.2/s1"),
        ("http://cam/mjpeg?user=a&password=b&ch=2", "http://cam/mjpeg?user=a&password=***&ch=2"),
        ("https://cam/v?token=abc&api_key=k", "https://cam/v?token=***&api_key=***"),
        ("rtsp://10.0.0.2/s1", "rtsp://10.0.0.2/s1"),
        ("hall.mp4", "hall.mp4"),
    ],
)
def test_credentials_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_the_sources_file_is_read_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "sources:\n"
        "  - {id: cam-1, url: 'rtsp://10.0.0.2/s1', fps: 2, labels: {hall: A}}\n"
        "  - {id: cam-2, url: clips/a.mp4, roi: [0, 0.5, 1, 1]}\n"
    )

    specs = load_sources_file(good)

    assert [s.id for s in specs] == ["cam-1", "cam-2"]
    assert specs[0].labels == {"hall": "A"}
    assert specs[1].roi == (0.0, 0.5, 1.0, 1.0)
    assert specs[1].fps == SourceSpec.model_fields["fps"].default


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("cameras: []\n", "sources:"),
        ("sources:\n  - {id: a, url: 'rtsp://x/1'}\n  - {id: a, url: 'rtsp://x/2'}\n", "twice"),
        ("sources:\n  - {id: a, url: 'rtsp://x/1', fps: 0}\n", "fps"),
        ("sources:\n  - {id: a, url: 'rtsp://x/1', roi: [0.5, 0, 0.2, 1]}\n", "roi"),
        ("sources:\n  - {id: 'a b', url: 'rtsp://x/1'}\n", "id"),
        ("sources:\n  - {id: a, url: 'rtsp://x/1', color: red}\n", "color"),
        ("sources: [\n", "cannot read"),
    ],
)
def test_a_bad_sources_file_says_what_is_wrong(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)

    with pytest.raises(InvalidSourceError, match=message):
        load_sources_file(path)
