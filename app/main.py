"""The `imchat` command: serve, check-config, migrate, user administration, backup and copy-db."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from app import __version__
from app.model.migrations import SCHEMA_VERSION, SchemaError
from app.paths import unpack_dir
from app.settings import Settings, SettingsError, load_settings, unmatched_environment
from app.util.logs import setup_logging

log = logging.getLogger("imchat.main")

# Where scripts/install.sh puts the admin's config.
INSTALLED_CONFIG = Path("/etc/imchat/config.toml")
LOCAL_CONFIG = Path("config.toml")

SEARCH_ORDER_HELP = """\
Which config file: --config FILE (before or after the command), else $IMCHAT_CONFIG, else the
first that exists of
  /etc/imchat/config.toml, ./config.toml   for the one-file binary (the installed imchat)
  ./config.toml, /etc/imchat/config.toml   when run from a source checkout (make run, .venv)
else the built-in defaults, whose relative paths (data/imchat.db, resource/) are in the
current folder. Every command says which config and which database it uses.
Exit status: 0 done, 1 refused (the message says why), 2 configuration or usage error (a
retry or a restart cannot help; the message names the key and the fix)."""


class CommandError(Exception):
    """A refusal told to the admin as one line, with the exit status to return."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def config_search_order() -> tuple[Path, ...]:
    """Files tried when neither --config nor $IMCHAT_CONFIG names one. The installed binary
    serves /etc/imchat/config.toml, so its admin commands must act on that one even when run
    from a folder holding a (development) config.toml."""
    if unpack_dir() is not None:
        return (INSTALLED_CONFIG, LOCAL_CONFIG)
    return (LOCAL_CONFIG, INSTALLED_CONFIG)


def _config_path(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    if os.environ.get("IMCHAT_CONFIG"):
        return Path(os.environ["IMCHAT_CONFIG"])
    for candidate in config_search_order():
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # e.g. `sudo -u imchat imchat ...` run from root's home folder
            continue
    return None


def load_config(args: argparse.Namespace) -> tuple[Settings, Path | None]:
    """The settings for this command and the file they came from (None: built-in defaults);
    never with data inside the one-file binary's unpack folder."""
    from app.preflight import check_data_paths

    path = _config_path(args.config)
    settings = load_settings(path)
    check_data_paths(settings)
    return settings, path


def _load(args: argparse.Namespace) -> Settings:
    settings, path = load_config(args)
    _announce(settings, path)
    return settings


def describe_config(settings: Settings, path: Path | None) -> str:
    """One line: which config file and which database (what an admin must never have to
    guess), as every command reports it."""
    from app.dbcopy import describe

    source = (str(path.absolute()) if path else
              f"none found, built-in defaults (relative paths from {settings.base_dir})")
    return f"config {source}; database {describe(settings)}"


def _announce(settings: Settings, path: Path | None) -> None:
    sys.stderr.write(f"imchat: {describe_config(settings, path)}\n")
    for name in unmatched_environment():
        sys.stderr.write(f"imchat: warning: {name} matches no setting (IMCHAT_<SECTION>_<KEY>, "
                         "see config.toml); ignored\n")


def cmd_check_config(args: argparse.Namespace) -> int:
    from app.preflight import check_tls, listen_problem

    settings, path = load_config(args)
    check_tls(settings)
    problem = listen_problem(settings)
    listen = f"{settings.server.host}:{settings.server.port}"
    if problem:
        # Not an error: the running server itself holds its port.
        listen += f" (in use now: fine if that is this imchat running; else {problem})"
    sys.stdout.write(
        f"config OK: {path.absolute() if path else '(none found: built-in defaults)'}\n"
        f"  listen {listen}, "
        f"{settings.server.workers} worker(s), mode {settings.server.mode}"
        f"{', TLS' if settings.server.tls_cert else ''}\n"
        f"  database {settings.database.engine} "
        f"({settings.sqlite_path if settings.database.engine == 'sqlite' else settings.database.host})\n"
        f"  uploads {settings.upload_path}, broker {settings.broker.kind}\n"
    )
    for name in unmatched_environment():
        sys.stdout.write(f"  warning: {name} matches no setting; ignored\n")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from app.preflight import check_serve
    from app.runner import serve

    settings, path = load_config(args)
    setup_logging(settings.log.level, settings.log.access_log)
    log.info("%s", describe_config(settings, path))
    for name in unmatched_environment():
        log.warning("%s matches no setting (IMCHAT_<SECTION>_<KEY>); ignored", name)
    check_serve(settings)
    # Upgrade the schema once, here, before any worker process opens the database.
    _with_database(settings, _nothing_more)
    serve(settings, path)
    return 0


async def _nothing_more() -> int:
    return 0


def _refuse_root_on_service_data(settings: Settings) -> None:
    """As root, touching the service's SQLite file would leave root-owned files (the database,
    its -wal/-shm) that the `imchat` service user then cannot write: refuse and say how."""
    if settings.database.engine != "sqlite" or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    folder = settings.sqlite_path.parent
    if folder.is_dir() and folder.stat().st_uid != 0:
        import pwd

        try:
            owner = pwd.getpwuid(folder.stat().st_uid).pw_name
        except KeyError:
            owner = str(folder.stat().st_uid)
        raise SystemExit(f"imchat: {folder} belongs to {owner}; run this as that user, e.g. "
                         f"sudo -u {owner} imchat ...")


def _with_database(settings: Settings, job: Callable[..., Awaitable[int]],
                   progress: Callable[[str], None] | None = None) -> int:
    from tortoise.exceptions import BaseORMException

    from app.dbcopy import describe
    from app.model.database import close_database, open_database
    from app.preflight import check_storage

    _refuse_root_on_service_data(settings)
    check_storage(settings, uploads=False)

    async def run() -> int:
        try:
            await open_database(settings, progress=progress)
        except BaseORMException as error:
            raise CommandError(f"cannot open the database {describe(settings)}: {error}"
                               ) from None
        try:
            return await job()
        finally:
            await close_database()

    return asyncio.run(run())


def _print_line(line: str) -> None:
    """Progress of a long command, one line at a time as it happens."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _load(args)
    setup_logging("WARNING")

    async def job() -> int:
        sys.stdout.write(f"database ready: {settings.database.engine}, schema {SCHEMA_VERSION}\n")
        return 0

    return _with_database(settings, job, _print_line)


def cmd_reindex(args: argparse.Namespace) -> int:
    from tortoise import Tortoise

    from app.model.database import connection_name
    from app.service.search import reindex

    settings = _load(args)
    setup_logging("WARNING")

    async def job() -> int:
        done = await reindex(Tortoise.get_connection(connection_name()), _print_line,
                             from_scratch=not (args.missing_only or args.follow))
        sys.stdout.write(f"search index ready: {done} messages indexed\n")
        sys.stdout.flush()
        if args.follow:
            # The server's indexer, in this process instead (servers set search.enabled off).
            from app.service.search import Indexer

            await Indexer(settings.search.index_interval_seconds).run_forever()
        return 0

    return _with_database(settings, job, _print_line)


def _read_password(args: argparse.Namespace) -> str:
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise CommandError("no terminal to ask for the password: pipe it in with "
                           "--password-stdin, e.g. echo 'the-password' | imchat user "
                           f"{args.user_cmd} {args.mobile} --password-stdin", status=2)
    try:
        first = getpass.getpass("password: ")
        again = getpass.getpass("again: ")
    except EOFError:
        raise CommandError("no password given", status=2) from None
    if first != again:
        raise CommandError("passwords differ")
    return first


def cmd_user(args: argparse.Namespace) -> int:
    from app.chat.broker import make_broker
    from app.chat.hub import Hub
    from app.service.context import ServiceContext
    from app.util.errors import AppError

    settings = _load(args)
    setup_logging("WARNING")
    # This process holds no chat connections: a local hub is enough whatever the broker.
    ctx = ServiceContext.build(settings, Hub(make_broker("memory", "")))
    password = _read_password(args) if args.user_cmd in ("add", "reset-password") else ""

    async def job() -> int:
        try:
            return await _user_command(ctx, args, password)
        except AppError as error:
            sys.stderr.write(f"refused: {error.detail}\n")
            return 1

    return _with_database(settings, job)


async def _user_command(ctx: Any, args: argparse.Namespace, password: str) -> int:
    """One `imchat user ...` command; the changes are recorded in the audit log as made from
    the command line."""
    from app.model.tables import AdminRole, User
    from app.service import admin

    if args.user_cmd == "list":
        admins = set(await AdminRole.all().values_list("user_id", flat=True))
        for user in await User.all().order_by("id"):
            state = "disabled" if user.disabled else "active"
            role = "\tadmin" if user.id in admins else ""
            sys.stdout.write(f"{user.id}\t{user.mobile}\t{user.nickname}\t{state}{role}\n")
        return 0
    if args.user_cmd == "add":
        user = await admin.create_user(ctx, admin.COMMAND_LINE, args.mobile, password,
                                       nickname=args.nickname, admin=args.admin)
        role = " with the admin role" if args.admin else ""
        sys.stdout.write(f"created user {user.id} ({user.mobile}){role}\n")
        return 0
    user = await User.get_or_none(mobile=args.mobile.lower())
    if user is None:
        sys.stderr.write(f"no user with mobile {args.mobile}\n")
        return 1
    if args.user_cmd in ("disable", "enable"):
        await admin.set_disabled(ctx, admin.COMMAND_LINE, user.id, args.user_cmd == "disable")
    elif args.user_cmd in ("grant-admin", "revoke-admin"):
        await admin.set_admin(admin.COMMAND_LINE, user.id, args.user_cmd == "grant-admin")
    else:
        await admin.reset_password(ctx, admin.COMMAND_LINE, user.id, password)
    sys.stdout.write(f"{args.user_cmd}: {user.mobile} done\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from app.service import audit, export
    from app.util.errors import AppError

    settings = _load(args)
    setup_logging("WARNING")
    scope = (export.Scope("user", (args.user,)) if args.user is not None
             else export.Scope("group", (args.group,)) if args.group is not None
             else export.Scope("all"))
    target = Path(args.output or scope.file_name()).absolute()
    if target.exists():
        raise CommandError(f"{target} exists already; name another file with --output")

    async def job() -> int:
        try:
            await export.check_scope(scope)  # before the file is made
        except AppError as error:
            raise CommandError(f"export refused: {error.detail}") from None
        counts = await export.write_archive(scope, target, settings.upload_path, _print_line)
        await audit.record(audit.EXPORT, actor_name="command line", target=scope.describe(),
                           address="command line", detail=str(target))
        _print_line(f"export written: {target} ({counts.messages} messages, {counts.users} "
                    f"users, {counts.groups} groups, {counts.files} files)")
        return 0

    return _with_database(settings, job)


def cmd_copy_db(args: argparse.Namespace) -> int:
    from app.dbcopy import CopyError, copy_database, describe

    source = load_settings(Path(args.from_config))
    target = load_settings(Path(args.to_config))
    _refuse_root_on_service_data(source)
    _refuse_root_on_service_data(target)
    setup_logging("INFO" if args.verbose else "WARNING")
    sys.stdout.write(f"copying {describe(source)} -> {describe(target)}\n")
    try:
        report = asyncio.run(copy_database(source, target, batch=args.batch_size,
                                           force=args.force))
    except CopyError as error:
        sys.stderr.write(f"copy-db refused: {error}\n")
        return 1
    for table, rows in report.rows.items():
        sys.stdout.write(f"  {table}: {rows} rows\n")
    sys.stdout.write(f"copied {report.total} rows; every table's row count matches\n")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from app.model.backup import BackupError, backup_sqlite

    settings = _load(args)
    # Even a read-only open of a WAL database creates its -wal/-shm files when they are missing.
    _refuse_root_on_service_data(settings)
    try:
        size = backup_sqlite(settings, Path(args.file))
    except BackupError as error:
        sys.stderr.write(f"backup refused: {error}\n")
        return 1
    sys.stdout.write(f"backup written: {args.file} ({size} bytes)\n")
    return 0


def _add_user_commands(user: argparse.ArgumentParser) -> None:
    user_cmds = user.add_subparsers(dest="user_cmd", required=True)
    user_cmds.add_parser("list", help="list accounts")
    add_user = user_cmds.add_parser("add", help="create an account")
    add_user.add_argument("mobile")
    add_user.add_argument("--nickname", default="")
    add_user.add_argument("--password-stdin", action="store_true",
                          help="read the password from standard input")
    add_user.add_argument("--admin", action="store_true",
                          help="give the account the admin role (the /admin/ console)")
    for name in ("disable", "enable"):
        user_cmds.add_parser(name, help=f"{name} an account").add_argument("mobile")
    user_cmds.add_parser("grant-admin", help="give an account the admin role").add_argument(
        "mobile")
    user_cmds.add_parser("revoke-admin", help="take the admin role away").add_argument("mobile")
    reset = user_cmds.add_parser("reset-password", help="set a new password; ends all sessions")
    reset.add_argument("mobile")
    reset.add_argument("--password-stdin", action="store_true")
    # `imchat user add X --config F` as well as `imchat user --config F add X`.
    for sub in user_cmds.choices.values():
        sub.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _add_export(exporting: argparse.ArgumentParser) -> None:
    which = exporting.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", type=int, metavar="ID", help="one user's one-to-one "
                       "conversations and what they wrote in groups")
    which.add_argument("--group", type=int, metavar="ID", help="everything said in one group")
    which.add_argument("--all", action="store_true", help="every message, user and group")
    exporting.add_argument("--output", metavar="FILE",
                           help="the archive to write (default imchat-export-<scope>.zip here)")


def _add_copy_db(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    copy = commands.add_parser(
        "copy-db", help="copy every row to another database (e.g. SQLite to MySQL)",
        description="Copy every row of every imchat table, keeping ids, from the database of "
        "--from-config to the database of --to-config (tables are created there). A target "
        "that already holds rows is refused unless --force.")
    copy.add_argument("--from-config", required=True, help="config.toml of the source")
    copy.add_argument("--to-config", required=True, help="config.toml of the target")
    copy.add_argument("--batch-size", type=int, default=1000, help="rows per insert (1000)")
    copy.add_argument("--force", action="store_true",
                      help="empty the target's imchat tables first (their rows are deleted)")
    copy.add_argument("--verbose", action="store_true", help="log progress per table")
    copy.set_defaults(handler=cmd_copy_db)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imchat", description="imchat chat server",
                                     epilog=SEARCH_ORDER_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"imchat {__version__}")
    # `imchat --config F user list` as well as `imchat user list --config F`.
    parser.add_argument("--config", metavar="FILE",
                        help="the config file (default: see the search order below)")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str,
            aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, aliases=list(aliases),
                                  epilog=SEARCH_ORDER_HELP,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        # SUPPRESS: an option given before the command is not reset by the command's default.
        sub.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                         help="the config file (default: see the search order below)")
        sub.set_defaults(handler=handler)
        return sub

    add("serve", cmd_serve, "start the server")
    add("check-config", cmd_check_config, "validate the config file and show what it means")
    add("migrate", cmd_migrate, "create the tables, or upgrade an older database to this "
        "version's schema (SQLite is backed up first; existing data is kept)", ("init-db",))
    reindex = add("reindex", cmd_reindex, "rebuild the message search index (safe while the "
                  "server runs; its own indexer keeps it current afterwards)")
    reindex.add_argument("--missing-only", action="store_true",
                         help="index only the messages not indexed yet")
    reindex.add_argument("--follow", action="store_true",
                         help="then keep indexing new messages until stopped (the indexer in its "
                         "own process: set [search] enabled = false for the servers)")
    user = add("user", cmd_user, "manage accounts")
    _add_user_commands(user)
    _add_export(add("export", cmd_export, "write chat history to a portable archive (a zip "
                    "of JSON lines and the files; see docs/admin.md)"))
    backup = add("backup", cmd_backup, "copy the SQLite database to a file while it is in use")
    backup.add_argument("file", help="the new backup file (must not exist)")
    _add_copy_db(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SettingsError as error:
        sys.stderr.write(f"imchat: configuration error: {error}\n")
        return 2
    except SchemaError as error:
        sys.stderr.write(f"imchat: database error: {error}\n")
        return 2
    except CommandError as error:
        sys.stderr.write(f"imchat: {error}\n")
        return error.status
    except PermissionError as error:
        if error.filename is None:  # not a file: a bug or a sandbox, worth its traceback
            raise
        # e.g. the service's data folder, from an admin command run as another user.
        sys.stderr.write(f"imchat: {error.strerror}: {error.filename} (run as the user that "
                         "owns it, e.g. sudo -u imchat imchat ...)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
