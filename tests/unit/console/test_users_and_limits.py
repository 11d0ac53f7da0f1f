"""Console accounts (argon2 hashes, roles, a 0600 file, sessions that end on disable and passwd), the
failed-login limiter (injected clock), the console's config section and its commands' author."""

from __future__ import annotations

import sqlite3

import pytest

from alerts import commands as command_rules
from config import ConfigError, load_config
from console.ratelimit import LoginLimiter
from console.users import UserError, UserStore
from tests.unit.alerts.helpers import write_config


def test_users_file_is_private_and_holds_no_password(tmp_path):
    path = tmp_path / "var" / "users.sqlite"
    store = UserStore(path)
    store.add("lin", "Duty officer Lin", "operator", "correct horse battery")
    assert path.stat().st_mode & 0o777 == 0o600
    hashed = sqlite3.connect(str(path)).execute("SELECT hash FROM users").fetchone()[0]
    assert hashed.startswith("$argon2id$") and "correct horse" not in hashed
    assert store.verify("lin", "correct horse battery").role == "operator"
    assert store.verify("lin", "wrong password!") is None
    assert store.verify("nobody", "correct horse battery") is None


def test_roles_and_refused_accounts(tmp_path, cheap_password_hashes):
    store = UserStore(tmp_path / "u.sqlite")
    v = store.add("zhao", "", "viewer", "a-long-password")
    a = store.add("root", "Admin", "admin", "a-long-password")
    assert (v.may("viewer"), v.may("operator"), a.may("operator"), a.may("admin")) == (True, False, True, True)
    with pytest.raises(UserError, match="^user 'zhao' exists already"):
        store.add("zhao", "", "viewer", "a-long-password")
    with pytest.raises(UserError, match=r"^role: must be one of viewer, operator, admin \(got 'boss'\)$"):
        store.add("x", "", "boss", "a-long-password")
    with pytest.raises(UserError, match=r"^password: at least 10 characters \(got 3\)$"):
        store.add("y", "", "viewer", "abc")
    with pytest.raises(UserError, match="^username: "):
        store.add("Bad Name", "", "viewer", "a-long-password")


def test_disable_and_passwd_end_sessions(tmp_path, cheap_password_hashes):
    store = UserStore(tmp_path / "u.sqlite")
    store.add("lin", "Lin", "operator", "a-long-password")
    token, session = store.new_session("lin", 3600)
    assert store.session(token).user.username == "lin" and len(session.csrf) >= 32
    # the file keeps only a hash of the cookie token
    assert token not in str(sqlite3.connect(str(tmp_path / "u.sqlite")).execute("SELECT * FROM sessions").fetchall())
    store.set_password("lin", "another-long-password")
    assert store.session(token) is None
    token, _ = store.new_session("lin", 3600)
    store.set_disabled("lin")
    assert store.session(token) is None and store.verify("lin", "another-long-password") is None
    store.set_disabled("lin", False)
    assert store.verify("lin", "another-long-password") is not None
    token, _ = store.new_session("lin", 3600)
    store.end_session(token)
    assert store.session(token) is None
    expired, _ = store.new_session("lin", -1)
    assert store.session(expired) is None


def test_login_limiter_per_key_with_a_sliding_window():
    now = [1000.0]
    lim = LoginLimiter(3, 60, clock=lambda: now[0])
    for _ in range(3):
        assert lim.retry_after("user:lin", "client:1.2.3.4") == 0
        lim.fail("user:lin", "client:1.2.3.4")
    assert lim.retry_after("user:lin") == pytest.approx(60)
    assert lim.retry_after("user:chen", "client:1.2.3.4") == pytest.approx(60)   # same client, other user
    assert lim.retry_after("user:chen", "client:5.6.7.8") == 0
    now[0] += 30
    assert lim.retry_after("user:lin") == pytest.approx(30)
    now[0] += 30.001
    assert lim.retry_after("user:lin", "client:1.2.3.4") == 0
    lim.fail("user:lin")
    lim.succeed("user:lin")
    assert lim.retry_after("user:lin") == 0


def test_login_limiter_memory_is_bounded():
    lim = LoginLimiter(2, 60, clock=lambda: 0.0, max_keys=100)
    for i in range(1000):
        lim.fail(f"client:{i}")
    assert len(lim._fails) == 100


def test_console_section_defaults_and_pinned_errors(tmp_path):
    cfg = load_config(None, env={})
    c = cfg.console
    assert (c.host, c.port, c.language, c.mqtt_username) == ("127.0.0.1", 8080, "zh-CN", "console")
    d = write_config(tmp_path / "cfg", (load_config.__globals__["DEFAULT_CONFIG_DIR"] / "alerts.yaml").read_text())
    (d / "console.yaml").write_text("console:\n  language: fr\n  port: 0\n  sesion_ttl_s: 5\n")
    with pytest.raises(ConfigError) as exc:
        load_config(d, env={})
    text = str(exc.value)
    assert "console.yaml:2: console.language: must be one of zh-CN, en (got 'fr')" in text
    assert "console.yaml:3: console.port: must be between 1 and 65535 (got 0)" in text
    assert "console.yaml:4: console.sesion_ttl_s: unknown key; did you mean 'session_ttl_s'?" in text


def test_console_authors_may_act_and_name_themselves():
    cfg = load_config(None, env={})
    author = command_rules.Author("console:lin", "Duty officer Lin")
    assert command_rules.author_allowed(cfg, author) is None
    assert command_rules.author_allowed(cfg, command_rules.Author("console:", "x")) is not None
    cmd = command_rules.validate({"action": "ack", "alert_id": "G-high.XMG0001.20250601T000000Z", "by": "lin"},
                                 cfg, author)
    assert cmd["action"] == "ack"
    with pytest.raises(ValueError, match="this command's author is 'console:lin'"):
        command_rules.validate({"action": "ack", "alert_id": "G-high.XMG0001.20250601T000000Z", "by": "wang"},
                               cfg, author)


def test_login_limiter_forgives_one_failure_of_a_key():
    """A login is counted as a failure before its password is checked; a success takes that one back."""
    t = [0.0]
    lim = LoginLimiter(3, 60.0, clock=lambda: t[0])
    lim.fail("client:a")
    lim.fail("client:a")
    lim.forgive("client:a")
    lim.fail("client:a")
    assert lim.retry_after("client:a") == 0  # 3 attempts, one forgiven: 2 failures
    lim.fail("client:a")
    assert lim.retry_after("client:a") > 0
    lim.forgive("client:b")  # a key with no failures: nothing to take back
    lim.forgive("client:a", "client:a", "client:a")
    assert lim.retry_after("client:a") == 0 and "client:a" not in lim._fails
