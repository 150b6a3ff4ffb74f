"""System binaries the tests need: fail under CI when missing, skip elsewhere."""

import os
import shutil

import pytest


def require_binary(name: str) -> str:
    """The path of `name` on PATH; fails the test under CI=true, skips it otherwise."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not on PATH; run scripts/system-deps.sh to install it"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
