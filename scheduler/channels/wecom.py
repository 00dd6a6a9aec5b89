"""WeCom (企业微信) group robot: ``POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…``
with ``{"msgtype": "markdown", "markdown": {"content": "…"}}`` (content at most 4096 bytes;
``<@userid>`` mentions a member)."""

from __future__ import annotations

from typing import Any

from models.digest import WECOM_MAX_BYTES, fit_markdown
from scheduler.channels._robot import Robot
from scheduler.channels.common import notice


def wecom_body(doc: dict[str, Any]) -> dict[str, Any]:
    userid = doc["recipient"].get("wecom_userid")
    mention = f"<@{userid}>\n" if userid else ""
    room = WECOM_MAX_BYTES - len(mention.encode())
    return {
        "msgtype": "markdown",
        "markdown": {"content": mention + fit_markdown(doc["markdown"], room)},
    }


class WeComRobot(Robot):
    kind = "wecom"

    def __init__(self, branch: str, url: str, timeout: float = 10.0) -> None:
        super().__init__(branch, url, timeout, [])

    async def send(self, key: str, body: bytes, headers: dict[str, str]) -> None:
        await self.post(self._url, wecom_body(notice(body)))
