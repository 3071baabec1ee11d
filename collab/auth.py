"""Identity and access: signed, expiring, revocable tokens and per-document roles.

Tokens are HS256 JWTs (PyJWT) carrying user id, display name, document, role and ``jti``; the
``jti`` names a row in the tokens table so a token can be revoked before it expires.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import jwt

from .exceptions import InvalidToken, PermissionDenied, TokenRevoked
from .store import Store

__all__ = ["Role", "AuthMode", "Identity", "Authenticator"]


class Role(StrEnum):
    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"
    AGENT = "agent"
    #: Not tied to a document: may create documents (tokens mode) and list its own.
    USER = "user"

    @property
    def can_write(self) -> bool:
        return self in (Role.OWNER, Role.EDITOR, Role.AGENT)


class AuthMode(StrEnum):
    OPEN = "open"
    TOKENS = "tokens"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is on the other end of a socket or request."""

    user_id: str
    name: str
    role: Role
    doc_id: str | None = None
    token_id: str | None = None
    #: Extra attribution from the token (agents: model, steering, run id, requested_by).
    meta: dict[str, Any] = field(default_factory=dict)

    #: Set for the hub's own edits (reverts): logged with author kind ``system``.
    system: bool = False
    #: When the token behind it expires (POSIX seconds; None: no token). An open socket is
    #: closed with 4401 then, not only refused at connect.
    expires_at: float | None = None

    #: The ``meta`` of this identity's log entries: built once and shared by all of them, so the
    #: store serialises it once, not once per keystroke (never mutated).
    log_meta: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "log_meta", {**self.meta, **({"token_id": self.token_id} if self.token_id else {})})

    @property
    def kind(self) -> str:
        """Author kind in the log: ``system`` for the hub, ``agent`` for agent tokens, else ``human``."""
        if self.system:
            return "system"
        return "agent" if self.role is Role.AGENT else "human"


class Authenticator:
    ALGORITHM = "HS256"

    def __init__(self, store: Store, secret: str, mode: AuthMode, ttl_s: int) -> None:
        self.store = store
        self.secret = secret
        self.mode = AuthMode(mode)
        self.ttl_s = ttl_s

    def issue(
        self,
        *,
        user_id: str,
        name: str,
        role: Role | str,
        doc_id: str | None = None,
        ttl_s: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> tuple[str, str]:
        """Record and sign a token; returns ``(token, token_id)``."""
        role = Role(role)
        if (role is Role.USER) != (doc_id is None):
            raise PermissionDenied("user tokens have no document; every other role needs one")
        expires = datetime.now(timezone.utc) + timedelta(seconds=ttl_s or self.ttl_s)
        token_id = self.store.add_token(doc_id=doc_id, user_id=user_id, name=name, role=role, expires_at=expires)
        claims = {
            "sub": user_id,
            "name": name,
            "role": str(role),
            "doc": doc_id,
            "jti": token_id,
            "exp": expires,
            "iat": datetime.now(timezone.utc),
        }
        if meta:
            claims["meta"] = meta
        return jwt.encode(claims, self.secret, algorithm=self.ALGORITHM), token_id

    def decode(self, token: str) -> Identity:
        """Verify signature, expiry and revocation; raises InvalidToken or TokenRevoked."""
        try:
            claims = jwt.decode(
                token, self.secret, algorithms=[self.ALGORITHM], options={"require": ["exp", "jti", "sub", "role"]}
            )
            role = Role(claims["role"])
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except (jwt.InvalidTokenError, ValueError) as exc:
            raise InvalidToken(f"invalid token: {exc}") from exc
        row = self.store.get_token(claims["jti"])
        if row is None:
            raise InvalidToken("unknown token")
        if row["revoked_at"] is not None:
            raise TokenRevoked("token revoked")
        meta = claims.get("meta") if isinstance(claims.get("meta"), dict) else {}
        return Identity(claims["sub"], claims.get("name") or claims["sub"], role, claims.get("doc"), claims["jti"], meta,
                        expires_at=float(claims["exp"]))

    def for_document(self, token: str | None, doc_id: str) -> Identity:
        """The identity a socket or request on ``doc_id`` acts as."""
        if not token:
            if self.mode is AuthMode.OPEN:
                return Identity("guest", "guest", Role.OWNER, doc_id)
            raise InvalidToken("a token is required (?token= or Authorization: Bearer)")
        ident = self.decode(token)
        if ident.role is Role.USER:
            if self.mode is AuthMode.OPEN:
                return Identity(ident.user_id, ident.name, Role.OWNER, doc_id, ident.token_id,
                                expires_at=ident.expires_at)
            raise PermissionDenied("a user token does not open a document; ask its owner for a share token")
        if ident.doc_id != doc_id:
            raise PermissionDenied("token is for another document")
        return ident  # a share link keeps its role even on an open hub: a viewer stays read-only

    def for_account(self, token: str | None) -> Identity:
        """The identity behind a request not about one document (create, list)."""
        if not token:
            if self.mode is AuthMode.OPEN:
                return Identity("guest", "guest", Role.USER)
            raise InvalidToken("a token is required (?token= or Authorization: Bearer)")
        return self.decode(token)

    @staticmethod
    def new_user_id() -> str:
        return uuid.uuid4().hex[:12]
