"""Keep secrets (robot keys and tokens, SMTP passwords) out of error messages and logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit


class ChannelError(RuntimeError):
    """A failed send, its message already free of secrets (it is stored and logged)."""


def url_secrets(url: str) -> list[str]:
    """The parts of a robot URL that are secret: its query values (key=, access_token=)."""
    return [v for _k, v in parse_qsl(urlsplit(url).query) if v]


def redact(message: str, secrets: Iterable[str | None]) -> str:
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        message = message.replace(s, "***")
    return message


def notice(body: bytes) -> dict[str, Any]:
    """The notice a channel target was handed (an outbox body of a ``notice.*`` row)."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or "markdown" not in doc or "recipient" not in doc:
        raise ChannelError("not a notice")
    return doc


class _Redacting(logging.Filter):
    """Rewrites records of the HTTP client's loggers (httpx logs each request's URL at INFO,
    and a robot's URL carries its key) so that no registered secret reaches a log."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            clean = redact(text, self.secrets)
            if clean != text:
                record.msg, record.args = clean, None
        return True


_FILTER = _Redacting()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_FILTER)


def keep_out_of_logs(secrets: Iterable[str | None]) -> None:
    _FILTER.secrets.update(s for s in secrets if s)
