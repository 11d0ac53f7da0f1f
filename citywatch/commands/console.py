"""`citywatch console [--config DIR] [--host H] [--port P]`: serve the web console (console/) in this
process, beside the service, until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os

from citywatch.errors import report_config_error
from config import ConfigError, load_config

MAX_CONNECTIONS = 1000  # uvicorn's limit_concurrency for the console (see _console)


def register(sub) -> None:
    p = sub.add_parser(
        "console",
        help="serve the web console: live alert board, alert evidence, ack (accounts: citywatch users)",
        description="Serve the operations console over HTTP (console section of the config). It reads the alert "
        "topics as its own broker account (console.mqtt_username, password in console.mqtt_password_env), the "
        "alert store and InfluxDB; acks go to the store's command inbox as console:<login>.",
    )
    p.add_argument("--config", default=None, metavar="DIR", help="config directory (default: the shipped config/)")
    p.add_argument("--host", default=None, help="address to listen on (default: console.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default: console.port, 8080)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=_console)


def _console(args) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return report_config_error(exc)
    import uvicorn

    from console.app import create_app

    host = args.host or cfg.console.host
    port = args.port or cfg.console.port
    if not os.environ.get(cfg.console.mqtt_password_env):
        logging.getLogger("citywatch.console").warning(
            "%s is not set: the console connects to the broker without a password", cfg.console.mqtt_password_env)
    app = create_app(cfg, dict(os.environ))
    logging.getLogger("citywatch.console").info("console on http://%s:%d/ (users: citywatch users list)", host, port)
    # A short graceful stop: the boards' event streams never end by themselves, and browsers reconnect.
    # At most MAX_CONNECTIONS connections at once (the boards' streams count), the rest answered 503: a client
    # opening connections and sending nothing cannot take every file descriptor.
    uvicorn.run(app, host=host, port=port, log_level=args.log_level.lower(), timeout_graceful_shutdown=2,
                access_log=False, limit_concurrency=MAX_CONNECTIONS)
    return 0
