"""What people receive: the morning digest, escalation pushes, their settings, routing.

Plain functions and values only (no database, no network): the reminder service gathers the
rows (reminders/service.py), quiet hours and the digest time are applied by
reminders/rules.py, and the channels send the result (scheduler/channels/). Texts are in
Chinese by default (the bank's words: 逾期未访客户, 贷后检查), English by setting.

Rules (README "Reminder channels"):

- one digest per manager per local day, at ``digest_time`` (default 08:30, bank time zone),
  never during quiet hours (a digest time inside them moves to their end);
- quiet hours (default 21:00-08:00; weekends all day when ``quiet_weekends``): nothing but
  escalations goes out; a digest retry falling into them waits for their end, and what came up
  meanwhile is in the next digest (the digest is read from the state at sending time);
- escalations are pushed at once, to the supervisor, as one message per supervisor per scan
  listing every reminder of their branch that escalated in it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

DIGEST = "notice.digest"
ESCALATION = "notice.escalation"
NOTICE_TYPES = (DIGEST, ESCALATION)

CHANNEL_KINDS = ("email", "wecom", "dingtalk")
"""Delivery target names: ``email``, ``wecom:<branch>``, ``dingtalk:<branch>`` (``*``: any
branch without a robot of its own)."""

WECOM_MAX_BYTES = 4096
"""WeCom group robot markdown content limit (UTF-8 bytes)."""
DINGTALK_MAX_BYTES = 20000
LIST_CAP = 30
"""At most this many clients per section; the rest is counted and on the dashboard."""


def parse_hhmm(value: str) -> time:
    """``"08:30"`` → 08:30; ValueError for anything else."""
    hh, sep, mm = value.strip().partition(":")
    if not sep or not (hh.isdigit() and mm.isdigit()) or len(mm) != 2 or len(hh) > 2:
        raise ValueError(f"expected HH:MM, got {value!r}")
    if int(hh) > 23 or int(mm) > 59:
        raise ValueError(f"expected HH:MM, got {value!r}")
    return time(int(hh), int(mm))


def parse_quiet_hours(value: str) -> tuple[time | None, time | None]:
    """``"21:00-08:00"`` → (21:00, 08:00); ``"off"`` or ``""`` → (None, None)."""
    v = value.strip().lower()
    if v in ("", "off", "none"):
        return None, None
    start, sep, end = v.partition("-")
    if not sep:
        raise ValueError(f"expected HH:MM-HH:MM or off, got {value!r}")
    return parse_hhmm(start), parse_hhmm(end)


@dataclass(frozen=True)
class NoticeRules:
    tz: ZoneInfo
    digest_time: time = time(8, 30)
    quiet_start: time | None = time(21, 0)
    quiet_end: time | None = time(8, 0)
    """No quiet hours when either is None or both are equal."""
    quiet_weekends: bool = True
    """Saturday and Sunday are quiet all day (no digest; escalations still go)."""
    lang: str = "zh"
    dashboard_url: str = "http://127.0.0.1:8000/dashboard"
    coming_days: int = 7
    """"Coming due this week": due within this many days of the digest."""


# --- routing --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipient:
    manager_id: str
    branch_id: str | None
    name: str | None = None
    email: str | None = None
    wecom_userid: str | None = None
    dingtalk_userid: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "manager_id": self.manager_id,
            "branch_id": self.branch_id,
            "name": self.name,
            "email": self.email,
            "wecom_userid": self.wecom_userid,
            "dingtalk_userid": self.dingtalk_userid,
        }


def robot_for(kind: str, branch_id: str | None, available: Iterable[str]) -> str | None:
    """The branch's group robot of this kind, else the default one (``kind:*``), else None."""
    names = set(available)
    if branch_id is not None and f"{kind}:{branch_id}" in names:
        return f"{kind}:{branch_id}"
    return f"{kind}:*" if f"{kind}:*" in names else None


def routes(r: Recipient, available: Iterable[str]) -> list[str]:
    """Which configured channels reach this person.

    Their own: the e-mail address (when SMTP is configured), and the branch's WeCom or DingTalk
    robot with an @-mention when they have that user id. Without any of these, every group
    robot of their branch (so the branch sees it). Empty when nothing is configured."""
    names = set(available)
    own: list[str] = []
    if r.email and "email" in names:
        own.append("email")
    for kind, userid in (("wecom", r.wecom_userid), ("dingtalk", r.dingtalk_userid)):
        robot = robot_for(kind, r.branch_id, names)
        if userid and robot:
            own.append(robot)
    if own:
        return sorted(own)
    return sorted(
        robot for kind in ("wecom", "dingtalk") if (robot := robot_for(kind, r.branch_id, names))
    )


# --- what a digest lists ------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    client_id: str
    client_name: str | None
    kind: str  # visit | post_loan_check
    due_at: datetime
    days: int
    """Days overdue (>= 0) or, for a coming item, days until due (>= 0)."""
    escalated: bool = False
    manager_id: str | None = None


def worst_first(items: Iterable[Item]) -> list[Item]:
    """Most overdue first (earliest due instant), then post-loan checks before visits (a credit
    risk), then client id."""
    return sorted(items, key=lambda i: (i.due_at, i.kind != "post_loan_check", i.client_id))


def soonest_first(items: Iterable[Item]) -> list[Item]:
    return sorted(items, key=lambda i: (i.due_at, i.kind != "post_loan_check", i.client_id))


@dataclass
class Message:
    """One message for one person, in the forms the channels need."""

    title: str
    text: str
    markdown: str
    html: str
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "text": self.text,
            "markdown": self.markdown,
            "html": self.html,
            "counts": self.counts,
        }


WORDS = {
    "zh": {
        "visit": "客户走访",
        "post_loan_check": "贷后检查",
        "digest_title": "{date} 每日提醒：逾期未访客户 {overdue} 户，本周到期 {coming} 户",
        "hello": "{name}，早上好。",
        "overdue": "逾期未访客户（{n}）",
        "coming": "本周到期（{n}）",
        "team": "本行已升级督办（{n}）",
        "overdue_line": "{client}　{kind}　逾期 {days} 天（应于 {due}）",
        "coming_line": "{client}　{kind}　{days} 天后到期（{due}）",
        "today_line": "{client}　{kind}　今日到期（{due}）",
        "team_line": "{client}　{kind}　逾期 {days} 天　客户经理 {manager}",
        "escalated_mark": "【已升级】",
        "more": "另有 {n} 项，详见看板",
        "link": "打开看板",
        "none": "暂无逾期或本周到期客户。",
        "esc_title": "升级督办：{n} 户客户逾期未处理",
        "esc_intro": "{name}，以下客户已超过宽限期仍未走访 / 检查，请督办：",
        "footer": "本消息由 crm-tracker 自动发送。",
    },
    "en": {
        "visit": "visit",
        "post_loan_check": "post-loan check",
        "digest_title": "{date} daily reminders: {overdue} overdue, {coming} due this week",
        "hello": "Good morning, {name}.",
        "overdue": "Overdue clients ({n})",
        "coming": "Due this week ({n})",
        "team": "Escalated in your branch ({n})",
        "overdue_line": "{client} - {kind} - {days} days overdue (due {due})",
        "coming_line": "{client} - {kind} - due in {days} days ({due})",
        "today_line": "{client} - {kind} - due today ({due})",
        "team_line": "{client} - {kind} - {days} days overdue - manager {manager}",
        "escalated_mark": "[escalated] ",
        "more": "{n} more on the dashboard",
        "link": "Open the dashboard",
        "none": "Nothing overdue or due this week.",
        "esc_title": "Escalation: {n} clients overdue past the grace period",
        "esc_intro": "{name}, these clients are past the grace period without a visit or check:",
        "footer": "Sent automatically by crm-tracker.",
    },
}


def words(lang: str) -> dict[str, str]:
    return WORDS.get(lang, WORDS["zh"])


def _client(i: Item) -> str:
    return f"{i.client_name}（{i.client_id}）" if i.client_name else i.client_id


def _line(i: Item, template: str, w: dict[str, str], tz: ZoneInfo) -> str:
    due = i.due_at.astimezone(tz).strftime("%Y-%m-%d")
    mark = w["escalated_mark"] if i.escalated else ""
    return mark + w[template].format(
        client=_client(i), kind=w[i.kind], days=i.days, due=due, manager=i.manager_id or ""
    )


@dataclass
class Section:
    heading: str
    lines: list[str]
    more: int


def _render(
    title: str, intro: str, sections: Sequence[Section], link: str, w: dict[str, str]
) -> Message:
    text = [title, "", intro, ""]
    md = [f"### {title}", "", intro, ""]
    body = [f"<h2>{html.escape(title)}</h2>", f"<p>{html.escape(intro)}</p>"]
    for s in sections:
        text += [s.heading] + [f"  {i + 1}. {ln}" for i, ln in enumerate(s.lines)]
        md += [f"**{s.heading}**", ""] + [f"{i + 1}. {ln}" for i, ln in enumerate(s.lines)]
        body += [f"<h3>{html.escape(s.heading)}</h3>", "<ol>"]
        body += [f"<li>{html.escape(ln)}</li>" for ln in s.lines]
        body.append("</ol>")
        if s.more:
            more = w["more"].format(n=s.more)
            text.append(f"  {more}")
            md.append(f"> {more}")
            body.append(f"<p>{html.escape(more)}</p>")
        text.append("")
        md.append("")
    text += [f"{w['link']}: {link}", "", w["footer"]]
    md += [f"[{w['link']}]({link})"]
    body += [
        f'<p><a href="{html.escape(link, quote=True)}">{html.escape(w["link"])}</a></p>',
        f'<p style="color:#888">{html.escape(w["footer"])}</p>',
    ]
    page = (
        '<!doctype html><html><head><meta charset="utf-8"></head>'
        '<body style="font-family:sans-serif">' + "".join(body) + "</body></html>"
    )
    return Message(title, "\n".join(text), "\n".join(md), page)


def _section(heading: str, items: Sequence[Item], template: str, w: dict, tz: ZoneInfo, cap: int):
    shown = items[:cap]
    lines = [
        _line(i, "today_line" if template == "coming_line" and i.days == 0 else template, w, tz)
        for i in shown
    ]
    return Section(heading.format(n=clients(items)), lines, len(items) - len(shown))


def clients(items: Iterable[Item]) -> int:
    """How many clients (户): a client overdue for a visit and a post-loan check is one."""
    return len({i.client_id for i in items})


def dashboard_link(rules: NoticeRules, branch_id: str | None) -> str:
    if not branch_id:
        return rules.dashboard_url
    sep = "&" if "?" in rules.dashboard_url else "?"
    return f"{rules.dashboard_url}{sep}branch={branch_id}"


def compose_digest(
    r: Recipient,
    day: date,
    overdue: Iterable[Item],
    coming: Iterable[Item],
    rules: NoticeRules,
    team: Iterable[Item] = (),
    cap: int = LIST_CAP,
) -> Message:
    """The morning digest: overdue clients worst first, then those coming due this week, then
    (for a supervisor) what escalated in their branch; one message."""
    w = words(rules.lang)
    over, soon, esc = worst_first(overdue), soonest_first(coming), worst_first(team)
    title = w["digest_title"].format(
        date=day.isoformat(), overdue=clients(over), coming=clients(soon)
    )
    sections = []
    if over:
        sections.append(_section(w["overdue"], over, "overdue_line", w, rules.tz, cap))
    if soon:
        sections.append(_section(w["coming"], soon, "coming_line", w, rules.tz, cap))
    if esc:
        sections.append(_section(w["team"], esc, "team_line", w, rules.tz, cap))
    intro = w["hello"].format(name=r.name or r.manager_id)
    if not sections:
        intro += " " + w["none"]
    msg = _render(title, intro, sections, dashboard_link(rules, r.branch_id), w)
    msg.counts = {"overdue": clients(over), "coming": clients(soon), "team": clients(esc)}
    return msg


def compose_escalation(
    r: Recipient, escalated: Iterable[Item], rules: NoticeRules, cap: int = LIST_CAP
) -> Message:
    """The immediate push to a supervisor: every reminder that escalated in one scan."""
    w = words(rules.lang)
    items = worst_first(escalated)
    title = w["esc_title"].format(n=clients(items))
    intro = w["esc_intro"].format(name=r.name or r.manager_id)
    section = _section(w["team"], items, "team_line", w, rules.tz, cap)
    msg = _render(title, intro, [section], dashboard_link(rules, r.branch_id), w)
    msg.counts = {"escalated": clients(items)}
    return msg


def fit_markdown(markdown: str, limit: int) -> str:
    """Cut a markdown text to ``limit`` UTF-8 bytes at a line boundary (robot size limits);
    the dashboard link, the last line, is kept."""
    if len(markdown.encode()) <= limit:
        return markdown
    lines = markdown.split("\n")
    last = lines.pop()
    out: list[str] = []
    size = len(last.encode()) + len("\n…\n".encode())
    for ln in lines:
        n = len(ln.encode()) + 1
        if size + n > limit:
            break
        out.append(ln)
        size += n
    return "\n".join([*out, "…", last])
