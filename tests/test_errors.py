"""Every client-visible error has its own stable code and a 4xx/5xx status."""

import inspect

import app.errors as errors_module
from app.errors import DetectorError


def _error_classes() -> list[type[DetectorError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors_module, inspect.isclass)
        if issubclass(cls, DetectorError)
    ]


def test_codes_are_unique_except_documented_aliases() -> None:
    by_code: dict[str, list[str]] = {}
    for cls in _error_classes():
        by_code.setdefault(cls.code, []).append(cls.__name__)
    shared = {code: names for code, names in by_code.items() if len(names) > 1}
    # InferenceFailedError is the concrete "model_error" that ModelError stands for.
    assert shared == {"model_error": ["InferenceFailedError", "ModelError"]}


def test_statuses_are_client_or_server_errors() -> None:
    for cls in _error_classes():
        assert 400 <= cls.http_status < 600, cls


def test_every_error_is_in_the_module_docstring_tree() -> None:
    doc = errors_module.__doc__ or ""
    for cls in _error_classes():
        assert f"{cls.__name__} " in doc
        assert f" {cls.code}" in doc
