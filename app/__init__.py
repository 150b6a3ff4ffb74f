"""phone-detector: finds mobile phones in images with DAMO-YOLO."""

__version__ = "0.1.0"
