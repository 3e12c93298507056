"""API keys of the HTTP service (``sigvault keys``, :mod:`sigvault.service`): create, list, revoke, authenticate.

A key is a name, a scope and a secret. The secret (``svk_`` + 43 URL-safe characters: 32 bytes from
:func:`secrets.token_bytes`) is shown once, when the key is created, and stored only as its SHA-256. A plain
hash is enough here, where a password would need a slow one (scrypt, argon2): a password is guessable, so a
slow hash makes each guess of a stolen hash expensive; a 256-bit random secret cannot be guessed at any
speed, so a slow hash would buy nothing and cost every request tens of milliseconds. The fast hash also lets
the service find a key by the hash of the presented secret with one indexed lookup; comparing hashes, not
secrets, leaves nothing for a timing attack to learn.

Scopes are ordered: ``verify`` (verify, compare, identify, read persons and decisions) < ``enroll`` (also
add references) < ``admin`` (also remove persons and set thresholds). Names are never reused, not even after
revocation, so the key name a decision records (``details["api_key"]`` in the decision log) identifies one key
forever.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import insert, select, update

from sigvault.db.engine import transaction
from sigvault.db.models import API_KEY_NAME_MAX, ApiKey, utcnow
from sigvault.errors import SigvaultError, UsageError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

Scope = Literal["verify", "enroll", "admin"]
SCOPES: tuple[Scope, ...] = ("verify", "enroll", "admin")  # each grants everything the ones before it grant
SECRET_PREFIX = "svk_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class KeyError_(UsageError):  # noqa: N801 - KeyError is a builtin
    """A key name or scope given to ``sigvault keys`` is malformed, taken or unknown."""


class AuthError(SigvaultError):
    """The HTTP caller presented no key, an unknown or revoked one (``code``: missing_key, invalid_key,
    revoked_key), or one without the scope the endpoint needs (insufficient_scope)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class KeyInfo:
    """A stored key, without its secret."""

    name: str
    scope: Scope
    created_at: datetime
    revoked_at: datetime | None

    @property
    def operator(self) -> str:
        """How the decision log names this key as the one who asked: ``api-key:NAME``."""
        return f"api-key:{self.name}"

    def allows(self, scope: Scope) -> bool:
        """Does this key grant ``scope`` (its own or a lesser one)?"""
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scope": self.scope,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def secret_hash(secret: str) -> str:
    """SHA-256 (hex) of a secret as presented."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or len(name) > API_KEY_NAME_MAX:
        raise KeyError_(
            f"key name {name[:80]!r} is not usable; use up to {API_KEY_NAME_MAX} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. teller-app)"
        )
    return name


def _check_scope(scope: str) -> Scope:
    if scope not in SCOPES:
        raise KeyError_(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
    return scope


_COLUMNS = (ApiKey.c.name, ApiKey.c.scope, ApiKey.c.created_at, ApiKey.c.revoked_at)


class ApiKeys:
    """The keys of one vault database."""

    def __init__(self, engine: Engine, *, operator: str | None = None, reason: str | None = None) -> None:
        self.engine = engine
        self.operator = operator  # who creates and revokes keys, recorded in the decision log with the reason
        self.reason = reason

    def _event(self, conn: Connection, kind: str, key: KeyInfo) -> None:
        """A ``key-create`` or ``key-revoke`` event in the decision log, in the change's own transaction."""
        from sigvault.db import decision_log

        details = {"name": key.name, "scope": key.scope}
        entry = decision_log.event(kind, "", operator=self.operator, reason=self.reason, details=details)
        decision_log.append(conn, [entry])

    def create(self, name: str, scope: str) -> tuple[KeyInfo, str]:
        """Create a key; returns it and its secret (shown once: only its hash is stored).

        Raises:
            KeyError_: the name is malformed or already used (revoked keys keep their names), or the scope unknown.
        """
        name, checked_scope = _check_name(name), _check_scope(scope)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        with transaction(self.engine, write=True) as conn:
            if conn.execute(select(ApiKey.c.id).where(ApiKey.c.name == name)).first() is not None:
                raise KeyError_(f"a key named {name!r} exists already (names are never reused); choose another name")
            conn.execute(
                insert(ApiKey),
                {"name": name, "scope": checked_scope, "secret_sha256": secret_hash(secret), "created_at": now},
            )
            key = KeyInfo(name, checked_scope, now, None)
            self._event(conn, "key-create", key)
        return key, secret

    def list(self) -> list[KeyInfo]:
        """Every key, revoked ones included, by name."""
        with transaction(self.engine) as conn:
            rows = conn.execute(select(*_COLUMNS).order_by(ApiKey.c.name)).all()
        return [KeyInfo(*row) for row in rows]

    def revoke(self, name: str) -> KeyInfo:
        """Revoke a key: from now on it is refused (401 revoked_key). Revoking a revoked key changes nothing.

        Raises:
            KeyError_: no key has that name.
        """
        with transaction(self.engine, write=True) as conn:
            row = conn.execute(select(*_COLUMNS).where(ApiKey.c.name == name).with_for_update()).first()
            if row is None:
                raise KeyError_(f"no key is named {name[:80]!r}; see `sigvault keys list`")
            key = KeyInfo(*row)
            if key.revoked_at is None:
                now = utcnow()
                conn.execute(update(ApiKey).where(ApiKey.c.name == name).values(revoked_at=now))
                key = KeyInfo(key.name, key.scope, key.created_at, now)
                self._event(conn, "key-revoke", key)
        return key

    def authenticate(self, secret: str | None) -> KeyInfo:
        """The live key whose secret this is.

        Raises:
            AuthError: no secret (missing_key), an unknown one (invalid_key) or a revoked key (revoked_key).
        """
        if not secret:
            raise AuthError(
                "missing_key", "no API key given; send the header `Authorization: Bearer <secret>` (`sigvault keys create`)"
            )
        with transaction(self.engine) as conn:
            row = conn.execute(select(*_COLUMNS).where(ApiKey.c.secret_sha256 == secret_hash(secret))).first()
        if row is None:
            raise AuthError("invalid_key", "the API key given is not a key of this vault; check the secret")
        key = KeyInfo(*row)
        if key.revoked_at is not None:
            raise AuthError(
                "revoked_key", f"the API key {key.name!r} was revoked on {key.revoked_at:%Y-%m-%d %H:%M} UTC; use another key"
            )
        return key


def require(key: KeyInfo, scope: Scope) -> None:
    """Raise :class:`AuthError` (insufficient_scope) unless ``key`` grants ``scope``."""
    if not key.allows(scope):
        raise AuthError(
            "insufficient_scope",
            f"the API key {key.name!r} has scope {key.scope}; this call needs scope {scope} or above",
        )
