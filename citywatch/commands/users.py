"""`citywatch users add|list|passwd|disable|enable`: the console's accounts (console.users_path), with roles
viewer (reads), operator (acks) and admin (accounts, and what operators may do)."""

from __future__ import annotations

import getpass
import sys

from config import ConfigError, load_config

EXIT_OK, EXIT_ERROR = 0, 1


def register(sub) -> None:
    p = sub.add_parser("users", help="console accounts: add, list, passwd, disable, enable",
                       description="Manage the console's accounts in console.users_path (SQLite, mode 0600). "
                       "Passwords are hashed with argon2id and read from the terminal, or from stdin with "
                       "--password-stdin.")
    p.add_argument("--config", default=None, metavar="DIR", help="config directory (default: the shipped config/)")
    u = p.add_subparsers(dest="users_command", metavar="ACTION")
    u.required = True
    q = u.add_parser("add", help="create an account")
    q.add_argument("username")
    q.add_argument("--role", required=True, choices=["viewer", "operator", "admin"],
                   help="viewer: reads; operator: also acknowledges alerts; admin: also manages accounts and what "
                   "operators may do")
    q.add_argument("--name", default=None, help="display name shown beside acks (default: the user name)")
    q.add_argument("--password-stdin", action="store_true", help="read the password from stdin (one line)")
    q.set_defaults(func=_add)
    q = u.add_parser("list", help="the accounts with their roles")
    q.set_defaults(func=_list)
    q = u.add_parser("passwd", help="set a new password (ends the user's sessions)")
    q.add_argument("username")
    q.add_argument("--password-stdin", action="store_true")
    q.set_defaults(func=_passwd)
    q = u.add_parser("disable", help="refuse the account's logins and end its sessions")
    q.add_argument("username")
    q.set_defaults(func=_disable)
    q = u.add_parser("enable", help="allow a disabled account again")
    q.add_argument("username")
    q.set_defaults(func=_enable)


def _store(args):
    from console.users import UserStore

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None
    return UserStore(cfg.resolve_path(cfg.console.users_path))


def _password(args) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("error: the two passwords differ")
    return first


def _run(fn) -> int:
    from console.users import UserError

    try:
        fn()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _add(args) -> int:
    store = _store(args)

    def add() -> None:
        user = store.add(args.username, args.name or args.username, args.role, _password(args))
        print(f"added {user.username} ({user.role})")

    return _run(add)


def _list(args) -> int:
    for user in _store(args).list():
        print(f"{user.username}\t{user.role}\t{'disabled' if user.disabled else 'enabled'}\t{user.name}")
    return EXIT_OK


def _passwd(args) -> int:
    store = _store(args)

    def passwd() -> None:
        store.set_password(args.username, _password(args))
        print(f"password of {args.username} changed")

    return _run(passwd)


def _disable(args) -> int:
    store = _store(args)
    return _run(lambda: (store.set_disabled(args.username, True), print(f"{args.username} disabled")))


def _enable(args) -> int:
    store = _store(args)
    return _run(lambda: (store.set_disabled(args.username, False), print(f"{args.username} enabled")))
