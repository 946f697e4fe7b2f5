"""Job bodies: small, versioned, signed JSON that names an execution (the database holds the rest).

A body is ``{"v": 1, "kind": ..., "id": ..., "key": ..., "run_at": ..., "sig": ...}`` where
``sig`` is HMAC-SHA256 over the other fields with the project secret. A worker verifies the
signature before it loads anything, so a forged body never reaches an import.
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from postburner_py.errors import PayloadTooLargeError, SignatureError
from postburner_py.queue.beanstalk import MAX_JOB_SIZE
from postburner_py.store import store_for

BODY_VERSION = 1
SECRET_SETTING = "signing_secret"
KINDS = ("execution", "delayed")


@dataclass(frozen=True)
class JobBody:
    """What a Beanstalkd job says: which row to run, for which occurrence."""

    kind: str
    id: int
    key: str
    run_at: datetime

    @property
    def run_at_text(self) -> str:
        """``run_at`` as it travels: UTC ISO-8601 with microseconds (exactly as stored)."""
        return self.run_at.astimezone(UTC).isoformat(timespec="microseconds")

    def _message(self) -> bytes:
        return _message(self.kind, self.id, self.key, self.run_at_text)


def _message(kind: str, id_: int, key: str, run_at_text: str) -> bytes:
    return f"v{BODY_VERSION}|{kind}|{id_}|{key}|{run_at_text}".encode()


def _signature(secret: bytes, message: bytes) -> str:
    return hmac.digest(secret, message, "sha256").hex()


def encode_body(body: JobBody, secret: bytes) -> bytes:
    """Serialise and sign ``body``; refuse it if it would not fit in a Beanstalkd job."""
    signature = _signature(secret, body._message())
    payload = {
        "v": BODY_VERSION,
        "kind": body.kind,
        "id": body.id,
        "key": body.key,
        "run_at": body.run_at_text,
        "sig": signature,
    }
    data = json.dumps(payload, separators=(",", ":")).encode()
    if len(data) > MAX_JOB_SIZE:
        raise PayloadTooLargeError(
            "name", f"job body is {len(data)} bytes, over Beanstalkd's {MAX_JOB_SIZE}"
        )
    return data


def decode_body(data: bytes, secret: bytes) -> JobBody:
    """Parse and verify a body; raises :class:`SignatureError`, and nothing else, for any body
    that is not ours: not JSON, nested too deep, fields missing or of the wrong type, text
    that is not valid Unicode, a signature that is not ours.

    The signature covers ``run_at`` exactly as it travels (the text :func:`encode_body`
    wrote), so it is checked before the instant is parsed; any other spelling of the same
    instant does not verify.
    """
    try:
        return _verified(data, secret)
    except SignatureError:
        raise
    except Exception as exc:
        # Fail closed: whatever else untrusted bytes provoke means the body is not ours.
        raise SignatureError(f"body is malformed ({type(exc).__name__})") from None


def _verified(data: bytes, secret: bytes) -> JobBody:
    """The body ``data`` stands for, once its signature verifies."""
    payload = _parse(data)
    kind = _field(payload, "kind", str)
    id_ = _field(payload, "id", int)
    key = _field(payload, "key", str)
    run_at_text = _field(payload, "run_at", str)
    if kind not in KINDS:
        raise SignatureError(f"unknown body kind {_shown(kind)}")
    signature = _field(payload, "sig", str)
    try:
        message = _message(kind, id_, key, run_at_text)
    except UnicodeEncodeError:
        raise SignatureError("body text is not valid Unicode (a lone surrogate)") from None
    # compare_digest takes str only when both are ASCII; ours is hex.
    if not signature.isascii() or not hmac.compare_digest(_signature(secret, message), signature):
        raise SignatureError(f"signature of {kind} {str(id_)[:20]} does not verify")
    return JobBody(kind=kind, id=id_, key=key, run_at=_parse_instant(run_at_text))


def _parse(data: bytes) -> dict[str, Any]:
    if not data.startswith(b"{"):
        raise SignatureError("body is not JSON: not an object")
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        raise SignatureError("body is not JSON (or nested too deep)") from None
    if not isinstance(payload, dict) or payload.get("v") != BODY_VERSION:
        raise SignatureError(f"body is not a version {BODY_VERSION} postburner body")
    return payload


def _field(payload: dict[str, Any], name: str, kind: type) -> Any:
    value = payload.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SignatureError(f"body field {name!r} is missing or not {kind.__name__}")
    return value


def _shown(text: str, limit: int = 40) -> str:
    """``repr(text)``, cut short: a forged body's log line stays one short line."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _parse_instant(text: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
        if instant.tzinfo is None or instant.utcoffset() is None:
            raise SignatureError("body run_at has no offset")
        return instant.astimezone(UTC)
    except (ValueError, OverflowError):
        raise SignatureError(f"body run_at {_shown(text)} is not an ISO-8601 instant") from None


def load_or_create_secret(engine: Engine) -> bytes:
    """The shared signing secret from the settings table, created once if absent."""
    candidate = secrets.token_urlsafe(32)
    with engine.begin() as connection:
        value = store_for(engine).setting(connection, SECRET_SETTING, candidate, datetime.now(UTC))
    return value.encode()
