"""Visit notes at rest: the AES-256-GCM form seals, Fernet tokens sealed before it still open
and rotate into it, a key no longer configured opens nothing; the raw message kept without
its notes is the same text whichever decoder removed them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken
from hypothesis import given, settings
from hypothesis import strategies as st

from models import visit_ledger
from models.visit_ledger import SEALED_V2, NotesCipher

TEXT = "复查: 客户 c1 的贷后检查 — ok ✓"


def test_seals_in_the_new_form_and_opens() -> None:
    key = Fernet.generate_key()
    cipher = NotesCipher([key])
    token = cipher.seal(TEXT)
    assert token.startswith(SEALED_V2)
    assert TEXT not in token and TEXT.encode() not in token.encode()
    assert cipher.open(token) == TEXT
    # a random nonce per note: the same notes never seal to the same text
    assert cipher.seal(TEXT) != token
    many = cipher.seal_many([TEXT, "", "x" * 4000])
    assert [cipher.open(t) for t in many] == [TEXT, "", "x" * 4000]
    assert len(set(many)) == 3
    # another process with the same key opens it (the key is derived, not kept)
    assert NotesCipher([key.decode()]).open(token) == TEXT


def test_fernet_tokens_sealed_before_still_open_and_rotate() -> None:
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    before = Fernet(old_key).encrypt(TEXT.encode()).decode()
    assert NotesCipher([old_key]).open(before) == TEXT
    both = NotesCipher([new_key, old_key])
    assert both.open(before) == TEXT
    rotated = both.rotate(before)
    assert rotated.startswith(SEALED_V2)
    assert NotesCipher([new_key]).open(rotated) == TEXT
    # notes of the new form sealed under the old key open while it is configured, and
    # rotate under the new one
    old_form = NotesCipher([old_key]).seal(TEXT)
    assert both.open(old_form) == TEXT
    assert NotesCipher([new_key]).open(both.rotate(old_form)) == TEXT


def test_a_key_no_longer_configured_opens_nothing() -> None:
    k1, k2 = Fernet.generate_key(), Fernet.generate_key()
    token = NotesCipher([k1]).seal(TEXT)
    only_new = NotesCipher([k2])
    with pytest.raises(InvalidToken):
        only_new.open(token)
    with pytest.raises(RuntimeError, match="no longer configured"):
        visit_ledger.open_notes(only_new, token)
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    for bad in (tampered, SEALED_V2, SEALED_V2 + "AAAA", SEALED_V2 + "é", SEALED_V2 + "!!"):
        with pytest.raises(InvalidToken):
            NotesCipher([k1]).open(bad)


def _stored_by_json(raw: bytes) -> bytes:
    """``stored_raw`` as written before its msgspec path: the reference."""
    if b"notes" not in raw and b"\\u" not in raw:
        return raw
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw
    if not visit_ledger._without_notes_doc(doc):
        return raw
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(
    notes=st.text(max_size=50) | _values,
    payload=st.dictionaries(st.text(max_size=8), _values, max_size=4),
    extra=st.dictionaries(st.text(max_size=8), _values, max_size=2),
    ascii_only=st.booleans(),
    repeated=st.booleans(),
)
def test_stored_raw_is_the_text_json_writes(
    notes: Any, payload: dict[str, Any], extra: dict[str, Any], ascii_only: bool, repeated: bool
) -> None:
    doc = {**extra, "event_id": "v1", "payload": {**payload, "notes": notes}}
    raw = json.dumps(doc, ensure_ascii=ascii_only).encode()
    if repeated:  # a key given twice: the last one wins in both decoders
        raw = raw.replace(b'"notes"', b'"notes":0,"notes"', 1)
    assert visit_ledger.stored_raw(raw) == _stored_by_json(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"[1]",
        b'"notes"',
        b'{"payload":"notes"}',
        b'{"payload":{"notes":"a"}',
        b'{"payload":{"notes":NaN}}',
        b'{"payload":{"notes":"a","n":1e16}}',
        b'{"payload":{"notes":"\\u00e9"}} ',
        b"\xff notes",
    ],
)
def test_stored_raw_edge_values(raw: bytes) -> None:
    assert visit_ledger.stored_raw(raw) == _stored_by_json(raw)
