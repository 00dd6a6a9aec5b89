"""Bearer tokens for the API under test."""

from __future__ import annotations

from api.auth import mint_token

SECRET = "test-secret-" + "x" * 40


def auth(role: str = "admin", secret: str = SECRET, **kw: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(secret, role, **kw)}"}  # type: ignore[arg-type]
