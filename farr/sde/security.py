"""Passwords (argon2id), expiring API tokens and the failed-login limit."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from farr.sde.models import ROLES, ApiToken, LoginFailure, User, utcnow

HASHER = PasswordHasher()  # argon2id, RFC 9106 low-memory defaults
DUMMY_HASH = HASHER.hash("no such user")  # verified against, so unknown names take as long
MAX_FAILURES, FAILURE_WINDOW = 5, dt.timedelta(minutes=15)
MIN_PASSWORD = 12


class AuthError(PermissionError):
    """Wrong credentials or an expired token (HTTP 401)."""


class RateLimited(PermissionError):
    """Too many failed logins (HTTP 429)."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(session: Session, username: str, password: str, role: str) -> User:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if not (1 <= len(username) <= 64 and username.replace("_", "").replace(".", "").isalnum()):
        raise ValueError(f"username {username!r}: use 1-64 letters, digits, '.' or '_'")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
    if session.scalar(select(User).where(User.username == username)):
        raise ValueError(f"user {username!r} exists already")
    user = User(username=username, password_hash=HASHER.hash(password), role=role)
    session.add(user)
    return user


def login(session: Session, username: str, password: str, lifetime: dt.timedelta) -> str:
    """A new token for good credentials; AuthError or RateLimited otherwise."""
    now = utcnow()
    recent = session.scalar(select(func.count()).select_from(LoginFailure).where(
        LoginFailure.username == username, LoginFailure.at > now - FAILURE_WINDOW))
    if recent >= MAX_FAILURES:
        raise RateLimited(f"too many failed logins for {username!r}; try again later")
    user = session.scalar(select(User).where(User.username == username))
    try:
        HASHER.verify(user.password_hash if user else DUMMY_HASH, password)
        if user is None:
            raise VerificationError
    except (VerificationError, InvalidHashError):
        session.add(LoginFailure(username=username[:64], at=now))
        raise AuthError("wrong username or password") from None
    session.execute(delete(LoginFailure).where(LoginFailure.username == username))
    session.execute(delete(ApiToken).where(ApiToken.user_id == user.id, ApiToken.expires_at < now))
    token = secrets.token_urlsafe(32)
    session.add(ApiToken(token_hash=token_digest(token), user_id=user.id, expires_at=now + lifetime))
    return token


def user_for_token(session: Session, token: str | None) -> User:
    if not token:
        raise AuthError("no API token: log in first")
    row = session.execute(select(ApiToken.expires_at, User).join(User, User.id == ApiToken.user_id)
                          .where(ApiToken.token_hash == token_digest(token))).first()
    if row is None:
        raise AuthError("unknown API token")
    if row.expires_at <= utcnow():
        raise AuthError("the API token has expired: log in again")
    return row.User
