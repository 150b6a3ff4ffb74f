"""A test RTSP camera: GStreamer's RTSP server streaming a red MJPEG picture on loopback.

Runs under the system Python (Debian's python3-gi and gir1.2-gst-rtsp-server-1.0), not the
project venv: `python3 tests/sources/rtsp_camera.py PORT` serves rtsp://127.0.0.1:PORT/live
and prints "ready" once it listens.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# Solid red (ARGB): the red-box test model reports the whole frame as a phone.
PIPELINE = (
    "( videotestsrc is-live=true pattern=solid-color foreground-color=0xffe61e1e"
    " ! video/x-raw,width=320,height=240,framerate=10/1 ! videoconvert"
    " ! video/x-raw,format=I420"
    " ! jpegenc ! rtpjpegpay name=pay0 pt=26 )"
)


def main() -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(sys.argv[1])
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    server.get_mount_points().add_factory("/live", factory)
    if server.attach(None) == 0:
        sys.exit("cannot listen")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
