"""One-line JSON rendering of a RunResult (strict JSON: non-finite floats are strings)."""

from __future__ import annotations

import json


def render_json(result) -> str:
    """The result as one JSON object on one line (no trailing newline)."""
    return json.dumps(result.to_json(), allow_nan=False, ensure_ascii=False)
