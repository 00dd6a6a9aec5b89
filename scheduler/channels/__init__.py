"""Channels that reach people: WeCom and DingTalk group robots, and e-mail.

Each is a delivery target (scheduler/delivery.py) named ``wecom:<branch>``,
``dingtalk:<branch>`` (``*``: the default robot for branches without one) or ``email``, and
receives the ``notice.*`` outbox rows routed to it (reminders/outbox.py): a JSON body carrying
the composed message (title, plain text, markdown, HTML) and the recipient. Robot URLs, their
keys and the SMTP password come from settings only; they are never stored, logged or put in
an error message (``redact``).
"""

from __future__ import annotations

from typing import Any

from config import SchedulerConfig
from scheduler.channels.common import notice
from scheduler.channels.dingtalk import DingTalkRobot, dingtalk_sign
from scheduler.channels.mail import EmailChannel
from scheduler.channels.wecom import WeComRobot

__all__ = [
    "DingTalkRobot",
    "EmailChannel",
    "WeComRobot",
    "channel_targets",
    "dingtalk_sign",
    "notice",
]


def channel_targets(settings: SchedulerConfig) -> list[Any]:
    """The channel targets the settings configure (none by default)."""
    timeout = settings.webhook_timeout
    out: list[Any] = [
        WeComRobot(branch, url.get_secret_value(), timeout)
        for branch, url in sorted(settings.wecom_robots.items())
    ]
    for branch, url in sorted(settings.dingtalk_robots.items()):
        secret = settings.dingtalk_secrets.get(branch) or settings.dingtalk_secrets.get("*")
        out.append(
            DingTalkRobot(
                branch,
                url.get_secret_value(),
                secret.get_secret_value() if secret else None,
                timeout,
            )
        )
    if settings.smtp_host:
        out.append(
            EmailChannel(
                host=settings.smtp_host,
                port=settings.smtp_port,
                sender=settings.smtp_from,
                username=settings.smtp_username,
                password=settings.smtp_password.get_secret_value()
                if settings.smtp_password
                else None,
                use_tls=settings.smtp_tls,
                start_tls=settings.smtp_starttls,
                timeout=timeout,
            )
        )
    return out
