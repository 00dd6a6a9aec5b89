"""What WeCom and DingTalk group robots have in common: a JSON POST answered by
``{"errcode": 0, "errmsg": "ok"}`` (an HTTP 200 with another errcode is a failure too)."""

from __future__ import annotations

from typing import Any

import httpx

from scheduler.channels.common import ChannelError, keep_out_of_logs, redact, url_secrets


class Robot:
    kind = "robot"

    def __init__(self, branch: str, url: str, timeout: float, secrets: list[str]) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{self.kind} robot URL of {branch!r} must be http(s)")
        self.branch = branch
        self.name = f"{self.kind}:{branch}"
        self._url = url
        self._secrets = [url, *url_secrets(url), *secrets]
        keep_out_of_logs(self._secrets)
        self._client = httpx.AsyncClient(timeout=timeout)

    def __repr__(self) -> str:  # never the URL: it carries the robot's key
        return f"<{type(self).__name__} {self.name}>"

    async def post(self, url: str, doc: dict[str, Any]) -> None:
        try:
            r = await self._client.post(url, json=doc)
        except httpx.HTTPError as exc:
            raise ChannelError(redact(f"{type(exc).__name__}: {exc}", self._secrets)) from None
        if r.status_code >= 300:
            raise ChannelError(f"HTTP {r.status_code}")
        try:
            answer = r.json()
        except ValueError:
            raise ChannelError(f"HTTP {r.status_code}: not a robot answer") from None
        code = answer.get("errcode") if isinstance(answer, dict) else None
        if code != 0:
            msg = str(answer.get("errmsg", ""))[:200] if isinstance(answer, dict) else ""
            raise ChannelError(redact(f"errcode {code}: {msg}", self._secrets))

    async def close(self) -> None:
        await self._client.aclose()
