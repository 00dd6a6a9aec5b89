"""List endpoints: ``limit`` / ``cursor`` query parameters and opaque cursors."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Query

from api.errors import Invalid

Limit = Annotated[int, Query(ge=1, le=1000, description="items per page (at most 1000)")]
Cursor = Annotated[
    str | None, Query(max_length=200, description="`next_cursor` of the previous page")
]


def encode_cursor(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str) -> int:
    """The position a cursor of ``kind`` carries; 422 for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        found, _, value = text.partition(":")
        if found != kind:
            raise ValueError
        n = int(value)
        if n < 0:
            raise ValueError
        return n
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Invalid("invalid cursor") from None
