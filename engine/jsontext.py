"""JSON that every reader can parse: a NaN or infinity (a node's output may hold one) becomes null
instead of the bare `NaN` Python writes, and other unknown values become strings. The server's
responses, websocket messages and history rows, and `vidgraph run --json` lines all go through it."""
from __future__ import annotations

import json
import math
from typing import Any


def json_text(value: Any, **kwargs) -> str:
    """JSON that browsers can parse: a NaN or infinity (a node's output may hold one) becomes
    null instead of the bare `NaN` Python writes; other unknown values become strings."""
    try:
        return json.dumps(value, allow_nan=False, default=str, **kwargs)
    except ValueError:  # a non-finite float somewhere (or a cycle, which fails again)
        return json.dumps(_finite(value), allow_nan=False, default=str, **kwargs)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
