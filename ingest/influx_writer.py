"""InfluxDB transports behind one small contract: write line protocol, or say why not.

`write(lines)` returns once InfluxDB accepted every line, or raises `RetryableWriteError` (server down, 5xx,
429: try again later, keep the data) or `RejectedWriteError` (HTTP 400: these lines will never be accepted;
the other lines were written). A 413 (body too large) is handled here by splitting the batch in halves.
`V1Writer` speaks the 1.x HTTP API (`/write`, `/ping`, `/query`), also served by 2.x/3.x for compatibility;
`V2Writer` uses influxdb-client's synchronous write API, so that its failures reach the caller.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import urllib3

from config.connections import basic_auth

if TYPE_CHECKING:
    from config.connections import Influx

log = logging.getLogger(__name__)

# Bisecting a 400 batch to find the refused lines stops at this many requests; whatever is left is refused
# together (InfluxDB has written the good lines of each request already, and rewrites are idempotent).
_MAX_BISECT_REQUESTS = 64


class WriteError(Exception):
    """Base of the write errors."""


class RetryableWriteError(WriteError):
    """The write failed in a way that may pass later (connection refused, timeout, 5xx, 429, auth).

    retry_after_s: the server's Retry-After, when it sent one.
    """

    def __init__(self, message: str, retry_after_s: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.status = status


class RejectedWriteError(WriteError):
    """InfluxDB refused some lines for good (HTTP 400: a field type conflict, a parse error).

    message: InfluxDB's error text; lines: the refused lines (newline-separated). The rest was written.
    """

    def __init__(self, message: str, lines: bytes) -> None:
        super().__init__(message)
        self.message = message
        self.lines = lines


class InfluxWriter:
    """Writes line protocol to InfluxDB. Subclasses implement `_post` (one HTTP request) and `ping`.

    Contract: `write` is synchronous and safe to call from one thread at a time per writer (two writers may
    run in parallel); `close` is called only after the last write returned.
    """

    def write(self, lines: bytes) -> None:
        """Write `lines` (line protocol, `\\n`-separated, ns precision).

        Raises RetryableWriteError when nothing can be said to be written, RejectedWriteError with the
        refused lines when the others were written.
        """
        if not lines.strip():
            return
        rejected: list[bytes] = []
        messages: list[str] = []
        budget = [_MAX_BISECT_REQUESTS]
        self._write_split(lines, rejected, messages, budget)
        if rejected:
            raise RejectedWriteError(messages[0] if messages else "rejected", b"\n".join(rejected))

    def _write_split(self, lines: bytes, rejected: list[bytes], messages: list[str], budget: list[int]) -> None:
        status, message, retry_after = self._post(lines)
        budget[0] -= 1
        if 200 <= status < 300:
            return
        if status in (400, 413):
            parts = lines.strip().split(b"\n")
            if len(parts) == 1 or (status == 400 and budget[0] <= 0):
                if status == 413:
                    # One line the server will never take at this size: it is refused for good.
                    message = f"line too large for the server (HTTP 413): {message}"
                rejected.append(lines.strip())
                messages.append(message)
                return
            half = len(parts) // 2
            for part in (b"\n".join(parts[:half]), b"\n".join(parts[half:])):
                self._write_split(part, rejected, messages, budget)
            return
        raise RetryableWriteError(f"HTTP {status}: {message}", retry_after, status)

    def _post(self, lines: bytes) -> tuple[int, str, float | None]:  # pragma: no cover - abstract
        """Send one request; return (status, server message, Retry-After seconds or None).

        Connection-level failures raise RetryableWriteError.
        """
        raise NotImplementedError

    def ping(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class V1Writer(InfluxWriter):
    """InfluxDB 1.x HTTP API: POST /write?db=..&precision=ns, GET /ping, /query (InfluxQL).

    url: server URL; database: target database; username/password: optional basic auth; timeout_s: per request.
    """

    def __init__(self, url: str, database: str, username: str | None = None, password: str | None = None,
                 timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self._params = {"db": database, "precision": "ns"}
        # Basic auth in a header, never `u`/`p` in the URL: URLs end up in logs and error messages.
        self._headers = basic_auth((username, password or "") if username else None)
        self._write_url = f"{self.url}/write?" + urllib.parse.urlencode(self._params)
        self._http = urllib3.PoolManager(
            num_pools=2, maxsize=4, timeout=urllib3.Timeout(total=timeout_s), retries=False
        )

    def _post(self, lines: bytes) -> tuple[int, str, float | None]:
        try:
            resp = self._http.request("POST", self._write_url, body=lines,
                                      headers={"Content-Type": "text/plain; charset=utf-8", **self._headers})
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RetryableWriteError(f"cannot reach InfluxDB at {self.url}: {exc}") from None
        message = ""
        if resp.status >= 300:
            try:
                message = json.loads(resp.data).get("error", "")
            except (ValueError, AttributeError):
                message = resp.data.decode("utf-8", "replace")[:500]
        return resp.status, message, _retry_after(resp.headers.get("Retry-After"))

    def ping(self) -> bool:
        try:
            return self._http.request("GET", self.url + "/ping").status == 204
        except (urllib3.exceptions.HTTPError, OSError):
            return False

    def query(self, influxql: str) -> list[dict[str, Any]]:
        """Run InfluxQL; return the `results` list. Raises RetryableWriteError if the server is unreachable,
        RuntimeError with the server's message for an error result."""
        params = dict(self._params, q=influxql, epoch="ns")
        params.pop("precision", None)
        try:
            resp = self._http.request("GET", f"{self.url}/query?" + urllib.parse.urlencode(params),
                                      headers=self._headers)
        except urllib3.exceptions.HTTPError as exc:
            raise RetryableWriteError(f"cannot reach InfluxDB at {self.url}: {exc}") from None
        body: dict[str, Any] = json.loads(resp.data or b"{}")
        if resp.status >= 300 or "error" in body:
            raise RuntimeError(f"InfluxQL {influxql!r}: HTTP {resp.status}: {body.get('error', '')}")
        for result in body.get("results", []):
            if "error" in result:
                raise RuntimeError(f"InfluxQL {influxql!r}: {result['error']}")
        results: list[dict[str, Any]] = body.get("results", [])
        return results

    def close(self) -> None:
        self._http.clear()


class V2Writer(InfluxWriter):
    """InfluxDB 2.x/3.x `/api/v2/write` through influxdb-client (token, org, bucket).

    The client's default batching write API only logs a failed write; the synchronous API raises, so
    failures reach the spool logic. The client's own retries are off: retry and backoff live in the spool.
    """

    def __init__(self, url: str, bucket: str, org: str, token: str | None, timeout_s: float = 10.0) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.url = url.rstrip("/")
        self.bucket = bucket
        self.org = org
        self._client = InfluxDBClient(url=self.url, token=token or "", org=org, timeout=int(timeout_s * 1000),
                                      retries=False, enable_gzip=False)
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def _post(self, lines: bytes) -> tuple[int, str, float | None]:
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            # influxdb-client annotates write_precision as WritePrecision, whose members are plain str class
            # attributes (WritePrecision.NS == "ns"): its own documented call does not type-check.
            self._api.write(bucket=self.bucket, org=self.org, record=lines,
                            write_precision=WritePrecision.NS)  # type: ignore[arg-type]
        except ApiException as exc:
            message = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body or exc.reason)
            try:
                message = json.loads(message).get("message", message)
            except (ValueError, AttributeError):
                pass
            headers: Mapping[str, str] = exc.headers or {}
            return int(exc.status or 0) or 503, message, _retry_after(headers.get("Retry-After"))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RetryableWriteError(f"cannot reach InfluxDB at {self.url}: {exc}") from None
        return 204, "", None

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except Exception:  # noqa: BLE001 - influxdb-client raises many kinds; a failed ping is just False
            return False

    def close(self) -> None:
        # influxdb-client's close() methods carry no annotations.
        self._api.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]


def make_writer(influx: Influx, env: Mapping[str, str] | None = None) -> InfluxWriter:
    """Build the writer the `connections.influx` config section asks for; secrets come from `env`."""
    environ: Mapping[str, str] = os.environ if env is None else env

    # config.connections.Influx requires bucket and org with api v2, database with v1 (_api_fields).
    if influx.api == "v2":
        assert influx.bucket is not None and influx.org is not None
        token = environ.get(influx.token_env) if influx.token_env else None
        return V2Writer(influx.url, influx.bucket, influx.org, token, influx.timeout_s)
    assert influx.database is not None
    user, password = influx.credentials(environ) or (None, None)
    return V1Writer(influx.url, influx.database, user, password, influx.timeout_s)
