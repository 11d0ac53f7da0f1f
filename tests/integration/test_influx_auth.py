"""InfluxDB with authentication on: anonymous and wrong-password requests are refused, the citywatch account
reads and writes its own database only, the service and the CLI use it, and its credentials file is private."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from citywatch.localstack import InfluxAccounts, InfluxProcess
from ingest.influx_writer import RetryableWriteError, V1Writer
from tests.integration.test_ingest_harness import GAS, DevicePublisher, data_topic, gas_payload, service_factory  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

LINE = b"gas_pressure,device_id=G1 p=2.5 1748788200000000000\n"


def _query(influx, q: str, auth, db: str | None = "citywatch") -> tuple[int, dict]:
    params = {"q": q}
    if db:
        params["db"] = db
    return influx.request("/query", params, auth=auth)


def _error(body: dict) -> str:
    """The error of an answer: top-level (HTTP 4xx) or of the first statement."""
    return body.get("error") or (body.get("results") or [{}])[0].get("error", "")


def test_anonymous_and_wrong_password_requests_are_refused(influx):
    wrong = (influx.username, influx.password + "x")
    for auth in (None, wrong, ("admin", "not-the-password"), ("nobody", "x")):
        status, _ = _query(influx, 'SELECT * FROM "gas_pressure"', auth)
        assert status == 401, auth
        status, _ = _query(influx, "SHOW DATABASES", auth, db=None)
        assert status == 401, auth
        status, _ = influx.request("/write", {"db": "citywatch", "precision": "ns"}, data=LINE, auth=auth)
        assert status == 401, auth
    assert influx.count("gas_pressure") == 0  # nothing of the refused writes landed
    # The writer the service uses: a wrong password is a retryable failure (the spool keeps the data).
    with pytest.raises(RetryableWriteError, match="HTTP 401"):
        V1Writer(influx.url, influx.database, *wrong).write(LINE)
    with pytest.raises(RetryableWriteError, match="HTTP 401"):
        V1Writer(influx.url, influx.database).write(LINE)


def test_the_citywatch_account_reads_and_writes_its_own_database_only(influx):
    influx.query('CREATE DATABASE "other"', method="POST", as_admin=True)  # not granted to citywatch
    me = (influx.username, influx.password)
    assert influx.username == "citywatch"

    # Its own database: write and read.
    status, _ = influx.request("/write", {"db": "citywatch", "precision": "ns"}, data=LINE, auth=me)
    assert status == 204
    status, body = _query(influx, 'SELECT "p" FROM "gas_pressure"', me)
    assert status == 200 and body["results"][0]["series"][0]["values"] == [["2025-06-01T14:30:00Z", 2.5]]

    # Another database: neither write nor read.
    status, body = influx.request("/write", {"db": "other", "precision": "ns"}, data=LINE, auth=me)
    assert status == 403 and "not authorized to write to database" in body["error"]
    status, body = _query(influx, 'SELECT * FROM "gas_pressure"', me, db="other")
    assert status == 403 and "requires READ on other" in body["error"]

    # No administration: users, grants, databases (its own included).
    for q in ("CREATE USER \"evil\" WITH PASSWORD 'x' WITH ALL PRIVILEGES", 'GRANT ALL ON "other" TO "citywatch"',
              'GRANT ALL PRIVILEGES TO "citywatch"', "SET PASSWORD FOR \"admin\" = 'x'", 'DROP USER "admin"',
              'DROP DATABASE "other"', 'DROP DATABASE "citywatch"', 'CREATE DATABASE "mine"', "SHOW USERS"):
        status, body = _query(influx, q, me, db=None)
        assert status == 403 and "requires admin privilege" in _error(body), (q, status, body)

    # The server agrees: citywatch is no admin, holds ALL on citywatch and nothing on `other`; `other` still exists.
    users = influx.query("SHOW USERS", as_admin=True)[0]["series"][0]["values"]
    assert sorted(users) == [["admin", True], ["citywatch", False]]
    grants = influx.query('SHOW GRANTS FOR "citywatch"', as_admin=True)[0]["series"][0]["values"]
    assert grants == [["citywatch", "ALL PRIVILEGES"]]
    databases = influx.query("SHOW DATABASES", as_admin=True)[0]["series"][0]["values"]
    assert ["other"] in databases and ["citywatch"] in databases


def test_accounts_survive_a_restart_and_a_second_start_on_the_same_data(influx, tmp_path):
    influx.write(LINE)
    before = json.loads(influx.credentials_path.read_text())
    influx.restart()  # ensure_accounts again on a server that has its users: idempotent
    assert influx.count("gas_pressure") == 1
    # stack_up run again: a new process object on the same directory keeps the file and its passwords.
    again = InfluxProcess(influx.directory, influx.port, influx.port + 1, database=influx.database)
    assert json.loads(again.credentials_path.read_text()) == before
    again.ensure_accounts()
    assert again.count("gas_pressure") == 1
    status, _ = _query(influx, "SHOW DATABASES", None, db=None)
    assert status == 401


def test_a_lost_credentials_file_is_a_clear_error(influx):
    influx.credentials_path.unlink()
    stranger = InfluxProcess(influx.directory, influx.port, influx.port + 1, database=influx.database)
    assert stranger.accounts != influx.accounts  # new passwords were generated
    with pytest.raises(RuntimeError, match="refuses the admin password of .*influx_credentials.json: restore"):
        stranger.ensure_accounts()


def test_the_credentials_file_is_private_from_its_first_byte(tmp_path, monkeypatch):
    """Mode 0600 when the file is created, before a byte is written (not chmod after the write), even with
    a umask of 0; and an existing file or symlink is never written through."""
    seen = []
    real_fdopen = os.fdopen

    def spy(fd, *a, **kw):
        seen.append(os.fstat(fd).st_mode & 0o777)
        assert os.fstat(fd).st_size == 0
        return real_fdopen(fd, *a, **kw)

    monkeypatch.setattr(os, "fdopen", spy)
    old = os.umask(0)
    try:
        path = tmp_path / "influx_credentials.json"
        accounts = InfluxAccounts.load_or_create(path)
    finally:
        os.umask(old)
    assert seen == [0o600]
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert InfluxAccounts.load_or_create(path) == accounts  # kept, not regenerated
    assert accounts.admin[0] == "admin" and accounts.user[0] == "citywatch"
    assert accounts.admin[1] != accounts.user[1] and len(accounts.user[1]) >= 20

    from citywatch.localstack import create_private_file

    target = tmp_path / "elsewhere"
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(FileExistsError):
        create_private_file(tmp_path / "link", "secret")
    assert not target.exists()


def test_the_service_writes_and_the_cli_reads_as_the_citywatch_account(tmp_path, mosquitto, influx, service_factory,
                                                                         service_env):
    # The service's environment names the citywatch account, never the admin.
    assert service_env["CITYWATCH_INFLUX_USERNAME"] == "citywatch"
    assert influx.accounts.admin[1] not in service_env.values()
    svc = service_factory()
    dev = GAS[0]
    pub = DevicePublisher(mosquitto, dev.id)
    t = time.time_ns() // 1_000_000 - 10_000
    pub.publish(data_topic(dev), gas_payload(dev, [t, t + 1000]))
    pub.flush()
    pub.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and influx.count("gas_pressure", "p") < 2:
        time.sleep(0.1)
    # Anonymous writes are refused (test above): these points were written with the account.
    assert influx.count("gas_pressure", "p") == 2
    assert svc.terminate() == 0

    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)

    def status(env):
        return subprocess.run([sys.executable, "-m", "citywatch", "status", "--config", str(svc.config_dir)],
                              env=env, capture_output=True, text=True, timeout=60, cwd=str(cwd))

    ok = status(service_env)
    assert "cannot read self-metrics" not in ok.stdout, ok.stdout
    refused = status({**service_env, "CITYWATCH_INFLUX_PASSWORD": "wrong"})
    # One line on stderr, exit 2, like every command that cannot use InfluxDB (citywatch/errors.py).
    assert refused.returncode == 2
    assert "refused the query" in refused.stderr and "HTTP 401" in refused.stderr
    assert "wrong" not in refused.stdout + refused.stderr  # the password is never echoed (no u/p in a URL)
