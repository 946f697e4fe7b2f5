"""Job bodies: signed on the way in, verified before anything is parsed further."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postburner_py.errors import SignatureError
from postburner_py.queue.signing import JobBody, decode_body, encode_body
from postburner_py.worker.admission import Outcome
from tests.test_worker import _run_until

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


def signed(**fields: Any) -> bytes:
    """A body with ``fields`` (over a valid one), signed with the real secret (as if leaked)."""
    payload = json.loads(encode_body(make_body(), SECRET))
    payload.update(fields)
    message = f"v1|{payload['kind']}|{payload['id']}|{payload['key']}|{payload['run_at']}"
    payload["sig"] = hmac.new(SECRET, message.encode(), hashlib.sha256).hexdigest()
    return json.dumps(payload).encode()


VALID = encode_body(make_body(), SECRET)
#: Bodies that escaped the signature check with another exception (each came back every TTR
#: with a traceback), and their kin.
FORGED = {
    "deep array": b"[" * 60000,
    "deep object": b'{"v": 1, "kind": ' + b'{"k": ' * 60000,
    "deep field": VALID[:-1] + b',"x":' + b"[" * 60000 + b"]" * 60000 + b"}",
    "lone surrogate key": tampered(VALID, key="\ud800"),
    "lone surrogate kind": tampered(VALID, kind="\udfff"),
    "lone surrogate run_at": tampered(VALID, run_at="2026-03-29T01:30:00\ud800"),
    "non-ASCII signature": tampered(VALID, sig="\u00e9" * 64),
    "non-hex signature": tampered(VALID, sig="z" * 64),
    "short signature": tampered(VALID, sig="00"),
    "number signature": tampered(VALID, sig=7),
    "non-UTF-8 bytes": b'{"v": 1, "kind": "execution", "key": "\xff\xfe"}',
    "raw non-UTF-8": VALID.replace(b"reports", b"rep\xffrts"),
    "UTF-16 (not the bytes we write)": VALID.decode().encode("utf-16"),
    "empty": b"",
    "only whitespace": b"   ",
    "a list": b"[1, 2]",
    "a string": b'"v1"',
    "NaN id": VALID.replace(b'"id":17', b'"id":NaN'),
    "float id": VALID.replace(b'"id":17', b'"id":17.0'),
    "huge id": VALID.replace(b'"id":17', b'"id":' + b"9" * 5000),
    "long id": VALID.replace(b'"id":17', b'"id":' + b"9" * 4000),
    "bool id": VALID.replace(b'"id":17', b'"id":true'),
    "null key": VALID.replace(b'"key":"reports:daily"', b'"key":null'),
    "nested key": VALID.replace(b'"key":"reports:daily"', b'"key":{"a":[1]}'),
    "signed overflowing run_at": signed(run_at="9999-12-31T23:00:00.000000-05:00"),
    "signed garbage run_at": signed(run_at="\u00e9" * 100),
}


@pytest.mark.parametrize("data", FORGED.values(), ids=FORGED.keys())
def test_a_forged_body_raises_signature_error_and_nothing_else(data: bytes) -> None:
    with pytest.raises(SignatureError) as raised:
        decode_body(data, SECRET)
    message = str(raised.value)
    assert "\n" not in message and len(message) < 200


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise_anything_but_signature_error(data: bytes) -> None:
    with pytest.raises(SignatureError):
        decode_body(data, SECRET)


_ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _ANY_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_ANY_TEXT, children, max_size=4)
    ),
    max_leaves=20,
)
#: Each field of the right type (any text, any integer) or any JSON at all, so that every check
#: of decode_body is reached with hostile values.
_FIELDS = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["execution", "delayed"]) | _JSON,
        "id": st.integers() | _JSON,
        "key": _ANY_TEXT | _JSON,
        "run_at": _ANY_TEXT | st.just(make_body().run_at_text) | _JSON,
    },
    optional={"sig": _ANY_TEXT | st.text("0123456789abcdef", min_size=64, max_size=64) | _JSON},
)


@settings(max_examples=300, deadline=None)
@given(_FIELDS)
def test_any_json_object_of_wrong_fields_raises_only_signature_error(
    fields: dict[str, Any],
) -> None:
    data = json.dumps({"v": 1, **fields}).encode()
    with pytest.raises(SignatureError):
        decode_body(data, SECRET)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(VALID)), st.integers(0, 8), st.binary(max_size=8))
def test_a_mangled_body_verifies_as_itself_or_raises_signature_error(
    at: int, cut: int, inserted: bytes
) -> None:
    data = VALID[:at] + inserted + VALID[at + cut :]
    try:
        decoded = decode_body(data, SECRET)
    except SignatureError:
        return
    assert decoded == make_body()  # only a change JSON ignores (say, a space) still verifies


# --- the worker buries them --------------------------------------------------------------------


def test_every_forged_body_is_buried_logged_once_and_counted(
    make_postburner: Callable[..., Any], sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    pb = make_postburner(database_url=sqlite_url)
    bodies = [
        FORGED["deep array"],
        FORGED["lone surrogate key"],
        FORGED["non-ASCII signature"],
        FORGED["raw non-UTF-8"],
        FORGED["huge id"],
    ]
    ids = [pb.queue.put(body, queue="default", priority=1, delay=0, ttr=2) for body in bodies]

    def buried() -> bool:
        return all((pb.queue.stats_job(i) or {}).get("state") == "buried" for i in ids)

    with caplog.at_level(logging.INFO, logger="postburner_py"):
        worker = _run_until(pb, buried, timeout=15)
    assert worker.outcomes[Outcome.FORGED] == len(bodies)
    for job_id in ids:
        lines = [r for r in caplog.records if f"job {job_id}:" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert "burying" in lines[0].getMessage()
    assert all(record.exc_info is None for record in caplog.records)
    assert "Traceback" not in caplog.text
