"""Console accounts and sessions in one SQLite file (mode 0600 from its first byte): argon2 password hashes,
roles viewer < operator < admin, sessions stored by the hash of their token so that the file never holds
a usable cookie."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

ROLES = ("viewer", "operator", "admin")
ROLE_RANK = {r: i for i, r in enumerate(ROLES)}
USERNAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 hashes any length; a bound keeps a megabyte "password" from costing CPU first

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, changed REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, csrf TEXT NOT NULL, created REAL NOT NULL,
    expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(username);
"""


class UserError(ValueError):
    """A refused account operation, with a message for the person at the terminal."""


@dataclass(frozen=True)
class User:
    username: str
    name: str
    role: str
    disabled: bool

    def may(self, role: str) -> bool:
        """Whether this user has at least `role` (viewer < operator < admin)."""
        return not self.disabled and ROLE_RANK[self.role] >= ROLE_RANK[role]


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    expires: float


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_password(password: str) -> None:
    """Raise UserError when `password` is too short or too long to be accepted."""
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password: at least {MIN_PASSWORD} characters (got {len(password)})")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"password: at most {MAX_PASSWORD} characters (got {len(password)})")


class UserStore:
    """Accounts and sessions. Safe to share between threads; the CLI and the running console may use the same
    file at once (WAL)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # 0600 from the first byte: the file is created here, before SQLite opens it.
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.RLock()
        self._hasher = PasswordHasher()
        # A fixed hash to verify against for unknown users: a login takes as long whether the user exists or not.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
        for side in ("-wal", "-shm"):
            p = self.path.with_name(self.path.name + side)
            if p.exists():
                os.chmod(p, 0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ----- accounts ---------------------------------------------------------------------------------

    def add(self, username: str, name: str, role: str, password: str) -> User:
        """Create an account. Raises UserError (bad name, role or password, or the user exists)."""
        if not USERNAME.match(username):
            raise UserError(f"username: lower-case letters, digits, '_', '.', '-', starting with a letter, "
                            f"at most 64 (got {username!r})")
        if role not in ROLES:
            raise UserError(f"role: must be one of {', '.join(ROLES)} (got {role!r})")
        name = (name or username).strip()[:80] or username
        check_password(password)
        now = time.time()
        with self._lock:
            try:
                self._db.execute("INSERT INTO users VALUES (?,?,?,?,0,?,?)",
                                 (username, name, role, self._hasher.hash(password), now, now))
            except sqlite3.IntegrityError:
                raise UserError(f"user {username!r} exists already (use passwd to change the password)") from None
        return User(username, name, role, False)

    def get(self, username: str) -> User | None:
        with self._lock:
            row = self._db.execute("SELECT username, name, role, disabled FROM users WHERE username=?",
                                   (username,)).fetchone()
        return User(row[0], row[1], row[2], bool(row[3])) if row else None

    def list(self) -> list[User]:
        with self._lock:
            rows = self._db.execute("SELECT username, name, role, disabled FROM users ORDER BY username").fetchall()
        return [User(r[0], r[1], r[2], bool(r[3])) for r in rows]

    def set_password(self, username: str, password: str) -> None:
        """Change a password and end the user's sessions. Raises UserError."""
        check_password(password)
        with self._lock:
            cur = self._db.execute("UPDATE users SET hash=?, changed=? WHERE username=?",
                                   (self._hasher.hash(password), time.time(), username))
            if cur.rowcount == 0:
                raise UserError(f"no user {username!r}")
            self._db.execute("DELETE FROM sessions WHERE username=?", (username,))

    def set_disabled(self, username: str, disabled: bool = True) -> None:
        """Disable (or enable) an account; disabling ends its sessions at once. Raises UserError."""
        with self._lock:
            cur = self._db.execute("UPDATE users SET disabled=?, changed=? WHERE username=?",
                                   (int(disabled), time.time(), username))
            if cur.rowcount == 0:
                raise UserError(f"no user {username!r}")
            if disabled:
                self._db.execute("DELETE FROM sessions WHERE username=?", (username,))

    def verify(self, username: str, password: str) -> User | None:
        """The user when `password` is theirs and the account is enabled, else None (never says which)."""
        with self._lock:
            row = self._db.execute("SELECT hash FROM users WHERE username=?", (username,)).fetchone()
        stored = row[0] if row else self._dummy
        try:
            ok = self._hasher.verify(stored, password[:MAX_PASSWORD]) and row is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        user = self.get(username) if ok else None
        return user if user is not None and not user.disabled else None

    # ----- sessions ---------------------------------------------------------------------------------

    def new_session(self, username: str, ttl_s: float) -> tuple[str, Session]:
        """A fresh session: (cookie token, session with its CSRF token). Expired sessions are swept here."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            self._db.execute("INSERT INTO sessions VALUES (?,?,?,?,?)",
                             (_token_hash(token), username, csrf, now, now + ttl_s))
        user = self.get(username)
        assert user is not None
        return token, Session(user, csrf, now + ttl_s)

    def session(self, token: str | None) -> Session | None:
        """The live session of a cookie token (its user enabled), or None."""
        if not token or len(token) > 100:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT s.csrf, s.expires, u.username, u.name, u.role, u.disabled FROM sessions s "
                "JOIN users u ON u.username = s.username WHERE s.token_hash=?", (_token_hash(token),)).fetchone()
        if row is None or row[1] < time.time() or row[5]:
            return None
        return Session(User(row[2], row[3], row[4], bool(row[5])), row[0], row[1])

    def end_session(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._db.execute("DELETE FROM sessions WHERE token_hash=?", (_token_hash(token),))
