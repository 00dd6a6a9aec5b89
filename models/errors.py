"""The domain's errors: one base, ``CRMError``, whose message is what a caller is told.

The API answers each kind with its status code in one place (api/errors.py): an unknown id
404, bad input 422 (never 500), a conflicting write 409.
"""

from __future__ import annotations


class CRMError(Exception):
    """Base of the errors a caller is told about: ``detail`` is the message."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(CRMError):
    """An unknown id: ``NotFound("manager", "m036")`` says "manager m036 not found"."""

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"{kind} {key} not found")
        self.kind = kind
        self.key = key


class Invalid(CRMError):
    """Bad input: the message names what and why."""


class Conflict(CRMError):
    """A write that met another one (retry), or a change the stored state no longer allows."""
