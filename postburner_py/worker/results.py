"""What a job's return value becomes in its history row's ``results``.

A plain JSON value (None, a bool, a number, text, or lists and mappings of them with text
keys) is stored as returned. Anything else (an object, bytes, a float that is not finite,
text with a NUL character, nesting too deep, or JSON over :data:`MAX_RESULT_BYTES`) cannot
be stored as JSON everywhere: it is stored as a note, ``{"unstored_result": <repr, cut to
MAX_REPR_CHARACTERS>, "reason": ...}``, so the run still completes and the operator sees why.
"""

from __future__ import annotations

import json
from typing import Any

#: The largest result kept as JSON (its compact JSON text, in bytes).
MAX_RESULT_BYTES = 65_536
#: How much of the ``repr`` of a value that cannot be stored is kept.
MAX_REPR_CHARACTERS = 1_000


def storable_result(value: Any) -> Any:
    """``value`` as it is stored in history ``results`` (see the module docstring)."""
    if value is None:
        return None
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        return _note(value, f"not JSON-serialisable ({type(exc).__name__}: {exc})")
    if "\\u0000" in text:
        return _note(value, "holds a NUL character, which the database cannot store")
    if len(text.encode()) > MAX_RESULT_BYTES:
        return _note(value, f"JSON larger than {MAX_RESULT_BYTES} bytes")
    return json.loads(text)


def _note(value: Any, reason: str) -> dict[str, str]:
    try:
        shown = repr(value)
    except Exception as exc:  # a broken __repr__ must not fail a run that succeeded
        shown = f"<{type(value).__name__}: repr raised {type(exc).__name__}>"
    return {"unstored_result": shown[:MAX_REPR_CHARACTERS], "reason": reason}
