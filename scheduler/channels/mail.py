"""E-mail over SMTP (aiosmtplib): one message per notice to the recipient's ``email``, with a
plain-text and an HTML part; its Message-ID is derived from the notice's ``event_id`` so a
mail system can drop a resend."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiosmtplib

from scheduler.channels.common import ChannelError, keep_out_of_logs, notice, redact


def email_message(doc: dict[str, Any], sender: str) -> EmailMessage:
    to = doc["recipient"].get("email")
    if not to:
        raise ChannelError("recipient has no e-mail address")
    msg = EmailMessage()
    msg["Subject"] = doc["title"]
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = formatdate(localtime=False)
    domain = sender.rpartition("@")[2].strip("> ") or "crm-tracker.local"
    msg["Message-ID"] = make_msgid(idstring=doc["event_id"], domain=domain)
    msg["X-CRM-Event-Id"] = doc["event_id"]
    msg.set_content(doc["text"])
    msg.add_alternative(doc["html"], subtype="html")
    return msg


class EmailChannel:
    kind = "email"
    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool = False,
        start_tls: bool | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self._username, self._password = username, password
        self._use_tls, self._start_tls, self._timeout = use_tls, start_tls, timeout
        keep_out_of_logs([password])

    def __repr__(self) -> str:
        return f"<EmailChannel {self.host}:{self.port}>"

    async def send(self, key: str, body: bytes, headers: dict[str, str]) -> None:
        msg = email_message(notice(body), self.sender)
        try:
            await aiosmtplib.send(
                msg,
                hostname=self.host,
                port=self.port,
                username=self._username,
                password=self._password,
                use_tls=self._use_tls,
                start_tls=self._start_tls,
                timeout=self._timeout,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            text = redact(f"{type(exc).__name__}: {exc}", [self._password])
            raise ChannelError(text[:500]) from None

    async def close(self) -> None:
        return None
