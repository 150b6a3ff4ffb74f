"""Test video: clips written with PyAV, and an MJPEG-over-HTTP camera on loopback that can be
killed and restarted on the same port."""

import http.server
import socket
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.utils.images import encode, red_box_image

FRAME_SIZE_PX = (320, 240)
PHONE_BOX = (100, 60, 180, 200)  # x1, y1, x2, y2 in frame pixels


def phone_frame(size_px: tuple[int, int] = FRAME_SIZE_PX) -> np.ndarray:
    """An RGB frame with a red rectangle (a "phone" to the red-box model)."""
    return np.asarray(red_box_image(size_px, PHONE_BOX))


def write_clip(
    path: Path, *, frames: int = 10, fps: int = 10, codec: str = "h264", box: bool = True
) -> Path:
    """Write a short clip of the phone frame (or a plain blue one) with PyAV."""
    pixels = phone_frame() if box else np.full((*FRAME_SIZE_PX[::-1], 3), (20, 60, 200), np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = FRAME_SIZE_PX
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.time_base = Fraction(1, fps)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class MjpegCamera:
    """Serves `/stream` (multipart MJPEG at `fps`) and `/page` (an HTML page: not video).

    `stop()` closes the listening socket and every open stream, as a camera reboot does;
    `start()` listens again on the same port.
    """

    def __init__(self, *, fps: float = 15.0, port: int = 0) -> None:
        self.fps = fps
        self.port = port
        self.requests = 0
        self._jpeg = encode(red_box_image(FRAME_SIZE_PX, PHONE_BOX), "JPEG", quality=90)
        self._server: http.server.ThreadingHTTPServer | None = None
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream"

    def start(self) -> "MjpegCamera":
        camera = self
        self._stopping.clear()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                camera.requests += 1
                if self.path == "/page":
                    body = b"<html><body>camera admin page</body></html>" * 20
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                part = (
                    b"--frame\r\nContent-Type: image/jpeg\r\n"
                    + f"Content-Length: {len(camera._jpeg)}\r\n\r\n".encode()
                    + camera._jpeg
                    + b"\r\n"
                )
                try:
                    while not camera._stopping.is_set():
                        self.wfile.write(part)
                        self.wfile.flush()
                        time.sleep(1.0 / camera.fps)
                except OSError:
                    return
                # A camera that reboots drops its clients without a goodbye.
                self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
