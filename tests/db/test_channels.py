"""Reminder channels against real local receivers: a WeCom and a DingTalk group robot (an HTTP
server checking their message bodies and DingTalk's URL signature) and an SMTP server
(aiosmtpd) reading the mail back; a frozen clock walked through a day; a failing receiver."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import json
import logging
import time as wallclock
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY

from config import Settings
from crmtracker.broker import free_port
from crmtracker.compose import api_app as create_app
from models.digest import (
    DIGEST,
    Item,
    NoticeRules,
    Recipient,
    compose_digest,
    fit_markdown,
    routes,
)
from reminders.rules import digest_day, in_quiet_hours, quiet_ends, release_at
from scheduler.channels import DingTalkRobot, EmailChannel, WeComRobot, channel_targets
from scheduler.service import ReminderScheduler
from testkit.api import SECRET, asgi_client, auth
from testkit.hooks import local_http
from testkit.reminders import World

TZ = ZoneInfo("Asia/Shanghai")
WECOM_KEY = "wecom-key-0123456789abcdef"
DING_TOKEN = "ding-token-0123456789abcdef"
DING_SECRET = "SECdingtalk-signing-secret-for-tests"
SMTP_PASSWORD = "smtp-password-for-tests"


def local(d: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(d, time(hh, mm), TZ).astimezone(UTC)


RULES = NoticeRules(tz=TZ, dashboard_url="https://crm.bank.example/dashboard")
TUESDAY = date(2026, 3, 3)


# --- the rules, as plain functions ---------------------------------------------------------
def test_quiet_hours_and_the_digest_day() -> None:
    assert in_quiet_hours(local(TUESDAY, 21), RULES)
    assert in_quiet_hours(local(TUESDAY, 7, 59), RULES)
    assert not in_quiet_hours(local(TUESDAY, 8), RULES)
    assert not in_quiet_hours(local(TUESDAY, 20, 59), RULES)
    saturday = TUESDAY + timedelta(days=4)
    assert in_quiet_hours(local(saturday, 12), RULES)
    assert not in_quiet_hours(local(saturday, 12), NoticeRules(tz=TZ, quiet_weekends=False))
    # a night ends at 08:00; Friday night ends on Monday morning
    assert quiet_ends(local(TUESDAY, 22), RULES) == local(TUESDAY + timedelta(days=1), 8)
    friday = TUESDAY + timedelta(days=3)
    assert quiet_ends(local(friday, 22), RULES) == local(friday + timedelta(days=3), 8)
    assert quiet_ends(local(TUESDAY, 10), RULES) == local(TUESDAY, 10)
    # digests wait, escalations do not
    assert release_at(DIGEST, local(TUESDAY, 23), RULES) == local(TUESDAY + timedelta(days=1), 8)
    assert release_at("notice.escalation", local(TUESDAY, 23), RULES) == local(TUESDAY, 23)
    assert digest_day(local(TUESDAY, 8, 29), RULES) is None
    assert digest_day(local(TUESDAY, 8, 30), RULES) == TUESDAY
    assert digest_day(local(TUESDAY, 21, 30), RULES) is None
    assert digest_day(local(saturday, 9), RULES) is None
    # a digest time inside quiet hours is reached when they end
    early = NoticeRules(tz=TZ, digest_time=time(7, 0))
    assert digest_day(local(TUESDAY, 7, 30), early) is None
    assert digest_day(local(TUESDAY, 8, 0), early) == TUESDAY
    assert not in_quiet_hours(local(TUESDAY, 23), NoticeRules(tz=TZ, quiet_start=None))


def test_routes_per_manager_then_the_branch_robot() -> None:
    have = ["email", "wecom:b1", "dingtalk:*"]
    assert routes(Recipient("m1", "b1", email="a@b.cn", wecom_userid="zs"), have) == [
        "email",
        "wecom:b1",
    ]
    assert routes(Recipient("m1", "b1", dingtalk_userid="zs"), have) == ["dingtalk:*"]
    # nobody to reach personally: every robot of the branch
    assert routes(Recipient("m2", "b1"), have) == ["dingtalk:*", "wecom:b1"]
    assert routes(Recipient("m3", "b9"), have) == ["dingtalk:*"]
    assert routes(Recipient("m3", "b9", email="x@y.cn"), ["wecom:b1"]) == []


def test_digest_text_worst_first_in_the_banks_words() -> None:
    now = local(TUESDAY, 8, 30)
    r = Recipient("m1", "b1", name="张三")
    overdue = [
        Item("c1", "甲公司", "visit", now - timedelta(days=3), 3),
        Item("c2", None, "post_loan_check", now - timedelta(days=9), 9, escalated=True),
        Item("c3", "丙公司", "visit", now - timedelta(days=9), 9),
    ]
    coming = [Item("c4", "丁公司", "visit", now + timedelta(days=2), 2)]
    msg = compose_digest(r, TUESDAY, overdue, coming, RULES)
    assert msg.title == "2026-03-03 每日提醒：逾期未访客户 3 户，本周到期 1 户"
    lines = msg.text.splitlines()
    first = [ln for ln in lines if "逾期" in ln and "天" in ln]
    # post-loan check before a visit of the same age, then the younger one
    assert "c2" in first[0] and "贷后检查" in first[0] and "逾期 9 天" in first[0]
    assert "【已升级】" in first[0]
    assert "丙公司（c3）" in first[1] and "甲公司（c1）" in first[2] and "逾期 3 天" in first[2]
    assert "丁公司（c4）　客户走访　2 天后到期" in msg.text
    assert "https://crm.bank.example/dashboard?branch=b1" in msg.text
    assert "https://crm.bank.example/dashboard?branch=b1" in msg.html
    assert "<li>" in msg.html and "张三" in msg.html
    en = compose_digest(r, TUESDAY, overdue, coming, NoticeRules(tz=TZ, lang="en"))
    assert "3 overdue, 1 due this week" in en.title and "9 days overdue" in en.text
    big = compose_digest(
        r,
        TUESDAY,
        [
            Item(f"c{i:03d}", "某某有限公司" * 3, "visit", now - timedelta(days=i), i)
            for i in range(90)
        ],
        [],
        RULES,
    )
    assert "另有 60 项，详见看板" in big.text
    # a client overdue for both a visit and a post-loan check is one client (户)
    both = [*overdue, Item("c1", "甲公司", "post_loan_check", now - timedelta(days=3), 3)]
    assert "逾期未访客户 3 户" in compose_digest(r, TUESDAY, both, [], RULES).title
    cut = fit_markdown(big.markdown, 4096)
    assert len(cut.encode()) <= 4096 and cut.endswith(big.markdown.splitlines()[-1])


def test_settings_build_the_channels_without_showing_secrets() -> None:
    s = Settings(
        wecom_robots={"b1": f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={WECOM_KEY}"},
        dingtalk_robots={"*": f"https://oapi.dingtalk.com/robot/send?access_token={DING_TOKEN}"},
        dingtalk_secrets={"*": DING_SECRET},
        smtp_host="127.0.0.1",
        smtp_password=SMTP_PASSWORD,
    )
    targets = channel_targets(s)
    assert [t.name for t in targets] == ["wecom:b1", "dingtalk:*", "email"]
    shown = repr(s) + "".join(repr(t) for t in targets)
    for secret in (WECOM_KEY, DING_TOKEN, DING_SECRET, SMTP_PASSWORD):
        assert secret not in shown
    with pytest.raises(ValueError):
        Settings(wecom_robots={"b1": "ftp://x"})
    with pytest.raises(ValueError):
        Settings(quiet_hours="21-8")
    with pytest.raises(ValueError):
        Settings(digest_time="25:00")


# --- real receivers ------------------------------------------------------------------------
@dataclass
class Robots:
    """A WeCom and a DingTalk group robot on one local HTTP server."""

    fail_first: int = 0
    calls: int = 0
    wecom: list[dict[str, Any]] = field(default_factory=list)
    dingtalk: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def _failing(self) -> bool:
        self.calls += 1
        return self.calls <= self.fail_first

    async def wecom_send(self, request: web.Request) -> web.Response:
        if self._failing():
            return web.Response(status=502, text="bad gateway")
        if request.query.get("key") != WECOM_KEY:
            return web.json_response({"errcode": 93000, "errmsg": "invalid webhook url"})
        doc = await request.json()
        content = doc.get("markdown", {}).get("content")
        if doc.get("msgtype") != "markdown" or not isinstance(content, str):
            self.problems.append(f"wecom body {doc}")
            return web.json_response({"errcode": 40008, "errmsg": "invalid message type"})
        if len(content.encode()) > 4096:
            self.problems.append("wecom content over 4096 bytes")
            return web.json_response({"errcode": 40058, "errmsg": "content exceed max length"})
        self.wecom.append(doc)
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def dingtalk_send(self, request: web.Request) -> web.Response:
        if self._failing():
            # DingTalk answers 200 with an error code when it refuses a message
            return web.json_response({"errcode": 130101, "errmsg": "send too fast"})
        q = request.query
        if q.get("access_token") != DING_TOKEN:
            return web.json_response({"errcode": 300001, "errmsg": "token is not exist"})
        ts = q.get("timestamp", "")
        expected = base64.b64encode(
            hmac.new(DING_SECRET.encode(), f"{ts}\n{DING_SECRET}".encode(), hashlib.sha256).digest()
        ).decode()
        fresh = ts.isdigit() and abs(int(ts) - wallclock.time() * 1000) < 3600_000
        if not fresh or not hmac.compare_digest(q.get("sign", ""), expected):
            self.problems.append("dingtalk signature")
            return web.json_response({"errcode": 310000, "errmsg": "sign not match"})
        doc = await request.json()
        md = doc.get("markdown", {})
        if doc.get("msgtype") != "markdown" or not md.get("title") or not md.get("text"):
            self.problems.append(f"dingtalk body {doc}")
            return web.json_response({"errcode": 40035, "errmsg": "missing param"})
        self.dingtalk.append(doc)
        return web.json_response({"errcode": 0, "errmsg": "ok"})


@dataclass
class Mailbox:
    fail_first: int = 0
    refuse_once: set[str] = field(default_factory=set)
    calls: int = 0
    mails: list[email.message.EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.calls += 1
        if self.calls <= self.fail_first or self.refuse_once & set(envelope.rcpt_tos):
            self.refuse_once -= set(envelope.rcpt_tos)
            return "451 4.3.0 try again later"
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert msg["To"] in envelope.rcpt_tos
        self.mails.append(msg)  # type: ignore[arg-type]
        return "250 OK"


def _parts(msg: email.message.EmailMessage) -> tuple[str, str]:
    plain = msg.get_body(preferencelist=("plain",))
    page = msg.get_body(preferencelist=("html",))
    assert plain is not None and page is not None
    return plain.get_content(), page.get_content()


# --- the world: managers with channels, clients coming due around one day ----------------
T0 = local(TUESDAY, 0)


async def _people(w: World) -> None:
    async def manager(mid: str, branch: str, supervisor: str | None, **kw: Any) -> None:
        await w.send(
            "crm.managers",
            "manager.upserted",
            T0 - timedelta(days=300),
            manager_id=mid,
            branch_id=branch,
            supervisor_id=supervisor,
            **kw,
        )

    await manager("m1", "b1", "s1", name="张三", email="m1@bank.example", wecom_userid="zhangsan")
    await manager("m2", "b2", "s2", name="李四")  # nothing personal: the branch's robot
    await manager("s1", "b1", None, name="王主管", email="s1@bank.example")


async def _clients(w: World) -> None:
    """Diamond clients (30-day interval, escalation 7 days after due)."""
    dues = {
        "c1": ("m1", T0 - timedelta(days=3) + timedelta(hours=8)),  # overdue 3 days
        "c2": ("m1", T0 + timedelta(days=2, hours=10)),  # due Thursday
        "c4": ("m2", T0 - timedelta(days=1)),  # overdue 1 day
        "c5": ("m1", T0 - timedelta(days=7) + timedelta(hours=14)),  # escalates 14:00
        "c3": ("m2", T0 - timedelta(days=7) + timedelta(hours=23)),  # escalates 23:00 (quiet)
        "c6": ("m1", T0 + timedelta(hours=15)),  # fires 15:00: no push, next digest
    }
    for cid, (mid, due) in dues.items():
        await w.client(cid, due - timedelta(days=30), manager=mid, name=f"客户{cid}")


def _channels(robots_url: str, smtp_port: int, **kw: Any) -> list[Any]:
    return [
        WeComRobot("b1", f"{robots_url}/cgi-bin/webhook/send?key={WECOM_KEY}"),
        DingTalkRobot("*", f"{robots_url}/robot/send?access_token={DING_TOKEN}", DING_SECRET),
        EmailChannel(host="127.0.0.1", port=smtp_port, sender="crm-tracker@bank.example", **kw),
    ]


def _settings(db_url: str, tmp_path: Path, **kw: Any) -> Settings:
    return Settings(
        **{
            "database_url": db_url,
            "data_dir": tmp_path,
            "auth_secret": SECRET,
            "dashboard_url": "https://crm.bank.example/dashboard",
            "webhook_backoff_seconds": 60,
            **kw,
        }
    )


@dataclass
class Town:
    """The people and clients of ``_people`` and ``_clients`` in the reminder world, with the
    WeCom and DingTalk robots and the mailbox their channels reach."""

    world: World
    robots: Robots
    mailbox: Mailbox
    robots_url: str
    smtp_port: int
    db_url: str
    data_dir: Path

    def settings(self, **kw: Any) -> Settings:
        return _settings(self.db_url, self.data_dir, **kw)

    def channels(self, **kw: Any) -> list[Any]:
        return _channels(self.robots_url, self.smtp_port, **kw)


@pytest.fixture
async def town(world: World, db_url: str, tmp_path: Path) -> AsyncIterator[Town]:
    robots, mailbox, smtp_port = Robots(), Mailbox(), free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        routes = [
            ("POST", "/cgi-bin/webhook/send", robots.wecom_send),
            ("POST", "/robot/send", robots.dingtalk_send),
        ]
        async with local_http(routes) as robots_url:
            await _people(world)
            await _clients(world)
            yield Town(world, robots, mailbox, robots_url, smtp_port, db_url, tmp_path)
    finally:
        smtp.stop()


async def test_a_day_one_digest_at_0830_quiet_nights_escalations_at_once(
    town: Town,
) -> None:
    w, rec, box = town.world, town.robots, town.mailbox
    sched = ReminderScheduler(town.settings(), w.engine, now=w.clock, targets=town.channels())
    seen: list[tuple[datetime, str, str]] = []  # (clock, channel, title or subject)
    counts = {"wecom": 0, "dingtalk": 0, "email": 0}

    def collect() -> None:
        for name, got in (("wecom", rec.wecom), ("dingtalk", rec.dingtalk), ("email", box.mails)):
            for item in got[counts[name] :]:
                if name == "email":
                    title = item["Subject"]
                elif name == "wecom":
                    title = item["markdown"]["content"]
                else:
                    title = item["markdown"]["title"]
                seen.append((w.clock.t, name, str(title)))
            counts[name] = len(got)

    w.clock.t = T0
    end = local(TUESDAY + timedelta(days=1), 9)
    try:
        while w.clock.t <= end:
            await sched.scan_once()
            await sched.deliver_once()
            collect()
            w.clock.t += timedelta(minutes=30)
    finally:
        await sched.stop()
    assert rec.problems == []

    def at(hh: int, mm: int = 0, day: int = 0) -> datetime:
        return local(TUESDAY + timedelta(days=day), hh, mm)

    # nothing at all before 08:30 on Tuesday (quiet hours, then before the digest time)
    assert [s for s in seen if s[0] < at(8, 30)] == []
    tuesday = [s for s in seen if s[0] == at(8, 30)]
    # m1: by e-mail and @-mentioned in branch b1's WeCom group; m2 (nothing personal): the
    # default DingTalk robot. One message each, nothing for the supervisor yet.
    assert sorted((ch for _t, ch, _x in tuesday)) == ["dingtalk", "email", "wecom"]
    mail = box.mails[0]
    assert mail["To"] == "m1@bank.example"
    assert mail["Subject"] == "2026-03-03 每日提醒：逾期未访客户 2 户，本周到期 2 户"
    plain, page = _parts(mail)
    # worst first: c5 (6 days), c1 (3 days); then coming: c6 today, c2 in 2 days
    order = [plain.index(f"客户{c}（{c}）") for c in ("c5", "c1", "c6", "c2")]
    assert order == sorted(order)
    assert "逾期 6 天" in plain and "逾期 3 天" in plain and "今日到期" in plain
    assert "https://crm.bank.example/dashboard?branch=b1" in plain
    assert 'href="https://crm.bank.example/dashboard?branch=b1"' in page
    assert rec.wecom[0]["markdown"]["content"].startswith("<@zhangsan>\n### 2026-03-03 每日提醒")
    ding = rec.dingtalk[0]
    assert ding["markdown"]["title"] == "2026-03-03 每日提醒：逾期未访客户 2 户，本周到期 0 户"
    assert "李四" in ding["markdown"]["text"] and ding["at"]["atUserIds"] == []

    # during the day: the escalation of c5 at 14:00 goes to s1 at once (one message); the
    # reminder fired at 15:00 is not pushed
    day_rest = [s for s in seen if at(8, 30) < s[0] < at(21)]
    assert day_rest == [(at(14), "email", "升级督办：1 户客户逾期未处理")]
    assert box.mails[1]["To"] == "s1@bank.example"
    assert "客户c5（c5）" in _parts(box.mails[1])[0]
    # at night only the escalation of c3 (23:00), to s2 (unknown: branch b2's robot, here the
    # default DingTalk one), at once
    night = [s for s in seen if at(21) <= s[0] < at(8, 30, day=1)]
    assert night == [(at(23), "dingtalk", "升级督办：1 户客户逾期未处理")]
    # Wednesday 08:30: one digest each again; c6 (fired in the day) is in m1's; s1 and s2 get
    # their branch's escalations; s1 by e-mail, s2 and m2 through the default DingTalk robot
    wednesday = [s for s in seen if s[0] >= at(8, 30, day=1)]
    assert all(t == at(8, 30, day=1) for t, _c, _x in wednesday)
    assert sorted(ch for _t, ch, _x in wednesday) == [
        "dingtalk",
        "dingtalk",
        "email",
        "email",
        "wecom",
    ]
    m1_wed = next(m for m in box.mails[2:] if m["To"] == "m1@bank.example")
    text = _parts(m1_wed)[0]
    assert "逾期未访客户 3 户" in m1_wed["Subject"] and "客户c6（c6）" in text
    assert "【已升级】客户c5（c5）" in text
    s1_wed = next(m for m in box.mails[2:] if m["To"] == "s1@bank.example")
    assert "本行已升级督办（1）" in _parts(s1_wed)[0]
    # over the whole run: one digest per person per day (m1's on two channels)
    digests = [s for s in seen if "每日提醒" in s[2]]
    assert len(digests) == 3 + 5


async def test_a_receiver_failing_then_recovering_loses_nothing_sends_nothing_twice(
    town: Town,
    caplog: pytest.LogCaptureFixture,
) -> None:
    w, rec, box = town.world, town.robots, town.mailbox
    rec.fail_first = 2  # WeCom 502 once, DingTalk refuses once (or the other way round)
    box.fail_first = 1
    settings = town.settings()
    sched = ReminderScheduler(
        settings,
        w.engine,
        now=w.clock,
        targets=town.channels(),
    )
    failures = (
        REGISTRY.get_sample_value("crm_reminder_delivery_failures_total", {"target": "email"})
        or 0.0
    )
    w.clock.t = local(TUESDAY, 8, 30)
    caplog.set_level(logging.DEBUG)
    try:
        await sched.scan_once()
        r = await sched.deliver_once()
        assert r.dispatched == 2 and r.delivered == 0 and r.retrying == 3
        assert rec.wecom == [] and rec.dingtalk == [] and box.mails == []

        app = create_app(settings)
        async with asgi_client(app, "http://t") as api:
            doc = (
                await api.get(
                    "/v1/reminders/deliveries",
                    params={"status": "pending"},
                    headers=auth("ops"),
                )
            ).json()
        assert doc["total"] == 3
        by_target = {i["target"]: i for i in doc["items"]}
        assert set(by_target) == {"email", "wecom:b1", "dingtalk:*"}
        assert {i["event_type"] for i in doc["items"]} == {DIGEST}
        assert all(i["attempts"] == 1 and i["last_error"] for i in doc["items"])
        listed = json.dumps(doc)
        # the retries wait for the backoff, and a quiet hour would hold them further
        w.clock.t += timedelta(seconds=30)
        assert (await sched.deliver_once()).delivered == 0
        w.clock.t += timedelta(seconds=31)
        r = await sched.deliver_once()
        assert r.delivered == 3 and r.retrying == 0
        for _ in range(3):  # more passes send nothing again
            w.clock.t += timedelta(minutes=30)
            await sched.scan_once()
            await sched.deliver_once()
    finally:
        await sched.stop()
    assert len(box.mails) == 1 and len(rec.wecom) == 1 and len(rec.dingtalk) == 1
    assert box.calls == 2 and rec.calls == 4
    assert (
        REGISTRY.get_sample_value("crm_reminder_delivery_failures_total", {"target": "email"})
        == failures + 1
    )
    # no secret in the stored errors, the API's answer or our logs (the receivers' own
    # access logs, here in the same process, of course show the URLs they were called on)
    receivers = ("aiohttp.access", "mail.log")
    logged = listed + "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(receivers)
    )
    assert "HTTP Request: POST" in logged  # httpx's request log is there, redacted
    for secret in (WECOM_KEY, DING_TOKEN, DING_SECRET, SMTP_PASSWORD):
        assert secret not in logged


def test_manager_channel_fields_are_optional_and_checked() -> None:
    from pydantic import ValidationError

    from models.events import ManagerUpserted

    base = {"manager_id": "m1", "branch_id": "b1"}
    m = ManagerUpserted(**base)
    assert m.email is None and m.wecom_userid is None and m.dingtalk_userid is None
    m = ManagerUpserted(**base, email="zhang.san@bank.example", wecom_userid="ZhangSan")
    assert m.email == "zhang.san@bank.example"
    for bad in (
        {"email": "not-an-address"},
        {"email": "a@b.cn, c@d.cn"},
        {"email": 5},
        {"wecom_userid": ""},
        {"dingtalk_userid": "two words"},
    ):
        with pytest.raises(ValidationError):
            ManagerUpserted(**base, **bad)


def test_up_demo_sends_the_digest_soon_and_keeps_explicit_settings(tmp_path: Path) -> None:
    from crmtracker.up import _demo_digest

    s = Settings(data_dir=tmp_path)
    s = _demo_digest(s)
    now = datetime.now(UTC)
    rules = s.notice_rules
    assert rules.quiet_start is None and not rules.quiet_weekends
    assert not in_quiet_hours(now, rules)
    soon = now.astimezone(rules.tz) + timedelta(minutes=3)
    if soon.date() == now.astimezone(rules.tz).date():
        assert digest_day(now, rules) is None  # not yet: two minutes after start
        assert digest_day(now + timedelta(minutes=3), rules) == soon.date()
    kept = Settings(data_dir=tmp_path, digest_time="09:00", quiet_hours="22:00-07:00")
    kept = _demo_digest(kept)
    assert kept.digest_time == "09:00" and kept.quiet_hours == "22:00-07:00"


async def test_a_digest_retry_falling_into_quiet_hours_waits_for_their_end(
    town: Town,
) -> None:
    w, rec, box = town.world, town.robots, town.mailbox
    box.refuse_once = {"m1@bank.example"}
    # a late digest (20:45) whose retry, 30 minutes on, would be in the night
    settings = town.settings(
        digest_time="20:45",
        webhook_backoff_seconds=1800,
        webhook_backoff_max_seconds=3600,
    )
    sched = ReminderScheduler(settings, w.engine, now=w.clock, targets=town.channels())
    w.clock.t = local(TUESDAY, 20, 45)
    try:
        await sched.scan_once()
        r = await sched.deliver_once()
        # c5's escalation push to s1; digests: m1 (mail, WeCom), m2 (DingTalk), s1 (mail)
        assert r.dispatched == 4 and r.delivered == 4 and r.retrying == 1
        app = create_app(settings)
        async with asgi_client(app, "http://t") as api:
            doc = (
                await api.get(
                    "/v1/reminders/deliveries",
                    params={"status": "pending", "target": "email"},
                    headers=auth("admin"),
                )
            ).json()
        assert doc["total"] == 1
        wednesday_8 = local(TUESDAY + timedelta(days=1), 8)
        assert datetime.fromisoformat(doc["items"][0]["next_attempt_at"]) == wednesday_8
        # an escalation at 23:00 still goes at once; the held digest does not
        w.clock.t = local(TUESDAY, 23)
        await sched.scan_once()
        await sched.deliver_once()
        assert len(box.mails) == 2 and len(rec.dingtalk) == 2  # m2's digest, s2's push
        assert "升级督办" in rec.dingtalk[1]["markdown"]["title"]
        w.clock.t = wednesday_8 - timedelta(minutes=1)
        assert (await sched.deliver_once()).delivered == 0
        w.clock.t = wednesday_8
        assert (await sched.deliver_once()).delivered == 1
    finally:
        await sched.stop()
    assert [m["To"] for m in box.mails] == ["s1@bank.example"] * 2 + ["m1@bank.example"]
    assert "2026-03-03 每日提醒" in box.mails[2]["Subject"]


class _Topic:
    """Stands in for the crm.reminders topic: records what it is given."""

    name = "kafka"

    def __init__(self) -> None:
        self.types: list[str] = []

    async def send(self, key: str, body: bytes, headers: dict[str, str]) -> None:
        self.types.append(json.loads(body)["event_type"])

    async def close(self) -> None:
        return None


async def test_two_schedulers_one_digest_each_and_machines_get_only_reminder_events(
    town: Town,
) -> None:
    import asyncio

    w, rec, box = town.world, town.robots, town.mailbox
    settings = town.settings()
    topic = _Topic()
    a = ReminderScheduler(settings, w.engine, now=w.clock, targets=[topic, *town.channels()])
    b = ReminderScheduler(settings, w.engine, now=w.clock, targets=town.channels())
    w.clock.t = local(TUESDAY, 14, 30)  # c5 escalates in this first scan
    rules = a.rules
    try:
        a.rules = replace(rules, digest_time=time(23, 59))  # a scan without the digest
        await a.scan_once()
        a.rules = rules
        # both reach the digest pass at the same moment: the day is written once
        n = await asyncio.gather(a.digest_once(), b.digest_once(), a.digest_once())
        assert sorted(n) == [0, 0, 3]  # m1, m2 and s1 (c5 escalated in his branch)
        w.clock.t += timedelta(minutes=5)
        await asyncio.gather(a.scan_once(), b.scan_once())
        await asyncio.gather(a.deliver_once(), b.deliver_once())
        await a.deliver_once()
    finally:
        await a.stop()
        await b.stop()
    # m1's digest; s1: c5's escalation pushed, and the digest with the branch's escalations
    assert sorted(m["To"] for m in box.mails) == ["m1@bank.example"] + ["s1@bank.example"] * 2
    assert len(rec.wecom) == 1 and len(rec.dingtalk) == 1
    # the topic got the reminder events (fired, escalated) and none of the notices
    assert topic.types and all(t.startswith("reminder.") for t in topic.types)
    assert "reminder.escalated" in topic.types
