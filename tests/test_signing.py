"""Job bodies: signed on the way in, verified before anything is parsed further."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from postburner_py.errors import SignatureError
from postburner_py.signing import JobBody, decode_body, encode_body

SECRET = b"s3cret"


def make_body(**changes: object) -> JobBody:
    fields: dict[str, object] = {
        "kind": "execution",
        "id": 17,
        "key": "reports:daily",
        "run_at": datetime(2026, 3, 29, 1, 30, 0, 250_000, tzinfo=UTC),
    }
    fields.update(changes)
    return JobBody(**fields)  # type: ignore[arg-type]


def tampered(data: bytes, **changes: object) -> bytes:
    payload = json.loads(data)
    payload.update(changes)
    return json.dumps(payload).encode()


def test_a_body_round_trips_with_run_at_in_utc():
    local = datetime(2026, 3, 29, 3, 30, 0, 250_000, tzinfo=timezone(timedelta(hours=2)))

    decoded = decode_body(encode_body(make_body(run_at=local), SECRET), SECRET)

    assert decoded == make_body()
    assert decoded.run_at.tzinfo is UTC


@pytest.mark.parametrize(
    "changes",
    [
        {"id": 18},
        {"key": "reports:weekly"},
        {"kind": "delayed"},
        {"run_at": "2026-03-29T01:30:01.250000+00:00"},
    ],
)
def test_a_changed_field_does_not_verify(changes):
    data = tampered(encode_body(make_body(), SECRET), **changes)

    with pytest.raises(SignatureError, match="does not verify"):
        decode_body(data, SECRET)


def test_the_same_instant_spelled_otherwise_does_not_verify():
    data = tampered(encode_body(make_body(), SECRET), run_at="2026-03-29T03:30:00.250000+02:00")

    with pytest.raises(SignatureError, match="does not verify"):
        decode_body(data, SECRET)


def test_another_secret_does_not_verify():
    with pytest.raises(SignatureError, match="does not verify"):
        decode_body(encode_body(make_body(), SECRET), b"other")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (b'{"v": 2}', "not a version 1"),
        (b'{"v": 1, "kind": "execution", "id": "17"}', "'id' is missing or not int"),
        (b'{"v": 1, "kind": "job", "id": 1, "key": "k", "run_at": "x"}', "unknown body kind"),
    ],
)
def test_what_is_not_a_body_of_ours_is_refused_with_the_reason(data, message):
    with pytest.raises(SignatureError, match=message):
        decode_body(data, SECRET)


def test_a_validly_signed_run_at_without_an_offset_is_refused():
    # Signed with the real secret (as if it had leaked): parsing still refuses a naive time.
    payload = json.loads(encode_body(make_body(), SECRET))
    payload["run_at"] = "2026-03-29T01:30:00.250000"
    message = f"v1|execution|17|reports:daily|{payload['run_at']}".encode()
    payload["sig"] = hmac.new(SECRET, message, hashlib.sha256).hexdigest()

    with pytest.raises(SignatureError, match="no offset"):
        decode_body(json.dumps(payload).encode(), SECRET)
