"""DingTalk (钉钉) group robot: ``POST https://oapi.dingtalk.com/robot/send?access_token=…``
with ``{"msgtype": "markdown", "markdown": {"title", "text"}, "at": {"atUserIds": [...]}}``.

With a signing secret ("加签"), every request carries ``&timestamp=<ms>&sign=<s>`` where ``s``
is the URL-encoded base64 of HMAC-SHA256(key=secret, message=f"{timestamp}\\n{secret}"), and
DingTalk refuses a timestamp more than an hour off (so the real clock signs, not a test's)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import quote_plus

from models.digest import DINGTALK_MAX_BYTES, fit_markdown
from scheduler.channels._robot import Robot
from scheduler.channels.common import notice


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """The ``sign`` query value (already URL-encoded) for this timestamp."""
    to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), to_sign, hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest))


def signed_url(url: str, secret: str | None, timestamp_ms: int) -> str:
    if not secret:
        return url
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}timestamp={timestamp_ms}&sign={dingtalk_sign(secret, timestamp_ms)}"


def dingtalk_body(doc: dict[str, Any]) -> dict[str, Any]:
    userid = doc["recipient"].get("dingtalk_userid")
    mention = f"@{userid}\n\n" if userid else ""
    room = DINGTALK_MAX_BYTES - len(mention.encode())
    return {
        "msgtype": "markdown",
        "markdown": {
            "title": doc["title"],
            "text": mention + fit_markdown(doc["markdown"], room),
        },
        "at": {"atUserIds": [userid] if userid else [], "isAtAll": False},
    }


class DingTalkRobot(Robot):
    kind = "dingtalk"

    def __init__(
        self, branch: str, url: str, secret: str | None = None, timeout: float = 10.0
    ) -> None:
        super().__init__(branch, url, timeout, [secret] if secret else [])
        self._secret = secret

    async def send(self, key: str, body: bytes, headers: dict[str, str]) -> None:
        url = signed_url(self._url, self._secret, int(time.time() * 1000))
        await self.post(url, dingtalk_body(notice(body)))
