"""Reading values out of a Prometheus text exposition."""

import re


def metric_value(text: str, name: str, *, default: float | None = None, **labels: str) -> float:
    """The value of the first series `name{labels...}` (a label subset matches).

    Returns `default` when there is no such series; raises AssertionError if `default` is None.
    """
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    if default is None:
        raise AssertionError(f"no series {name}{labels} in the exposition")
    return default
