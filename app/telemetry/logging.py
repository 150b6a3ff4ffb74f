"""Log set-up for the service and CLI; modules get loggers through `get_logger`."""

import logging


def get_logger(name: str) -> logging.Logger:
    """A logger under the `phone_detector` hierarchy."""
    return logging.getLogger(f"phone_detector.{name.removeprefix('app.')}")


def configure_logging(level: str = "info") -> None:
    """Plain one-line logs on stderr at `level`."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
