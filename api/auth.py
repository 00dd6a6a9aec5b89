"""Bearer tokens: HS256 JWTs signed with the configured secret, carrying role and scope."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt
from cachetools import TLRUCache

Role = Literal["manager", "supervisor", "ops", "admin"]
ROLES: tuple[str, ...] = ("manager", "supervisor", "ops", "admin")
ALGORITHM = "HS256"
ISSUER = "crm-tracker"


class TokenError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    manager_id: str | None = None
    branches: frozenset[str] = field(default_factory=frozenset)

    def can_see_manager(self, manager_id: str, branch_id: str | None) -> bool:
        if self.role == "admin":
            return True
        if self.role == "supervisor":
            return branch_id is not None and branch_id in self.branches
        if self.role == "manager":
            return self.manager_id == manager_id
        return False

    def can_see_branch(self, branch_id: str) -> bool:
        return self.role == "admin" or (self.role == "supervisor" and branch_id in self.branches)


def parse_ttl(text: str) -> timedelta:
    """'8h', '30m', '2d', '3600s' or plain seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not m:
        raise ValueError(f"bad duration {text!r}: use e.g. 30m, 8h, 7d")
    n = int(m.group(1))
    unit = m.group(2) or "s"
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: n})


def mint_token(
    secret: str,
    role: str,
    *,
    manager_id: str | None = None,
    branches: list[str] | None = None,
    ttl: timedelta = timedelta(hours=8),
    subject: str | None = None,
) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role == "manager" and not manager_id:
        raise ValueError("a manager token needs --manager ID")
    if role == "supervisor" and not branches:
        raise ValueError("a supervisor token needs at least one --branch ID")
    now = datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "sub": subject or manager_id or role,
        "role": role,
        "manager_id": manager_id,
        "branches": sorted(branches or []),
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


# Tokens already verified, by their exact text (signature included): decoding a JWT costs more
# than a cached answer. Each is kept until its own expiry (then verified again, and refused),
# the least recently used going first beyond 10,000.
_VERIFIED: TLRUCache[tuple[str, str], tuple[Principal, float]] = TLRUCache(
    maxsize=10_000, ttu=lambda _key, value, _now: value[1], timer=time.time
)


def decode_token(secret: str, token: str) -> Principal:
    known = _VERIFIED.get((secret, token))
    if known is not None:
        return known[0]
    principal, expires = _verify(secret, token)
    _VERIFIED[(secret, token)] = (principal, expires)
    return principal


def _verify(secret: str, token: str) -> tuple[Principal, float]:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub"]},
        )
    except jwt.PyJWTError as exc:
        raise TokenError(str(exc)) from None
    role = claims.get("role")
    if role not in ROLES:
        raise TokenError("token carries no valid role")
    branches = claims.get("branches") or []
    if not isinstance(branches, list) or not all(isinstance(b, str) for b in branches):
        raise TokenError("token branches must be a list of strings")
    principal = Principal(
        subject=str(claims["sub"]),
        role=role,
        manager_id=claims.get("manager_id"),
        branches=frozenset(branches),
    )
    return principal, float(claims["exp"])
