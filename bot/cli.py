"""`imagine-bot`: one entry point, a subcommand per process kind.

    imagine-bot console [--script FILE]   the local front-end (and the embedded demo)
    imagine-bot discord                   the Discord bot
    imagine-bot slack                     the Slack bot
    imagine-bot gallery                   the team gallery web page
    imagine-bot worker                    a Celery render worker (one per GPU)
    imagine-bot migrate                   bring the database schema up to date
    imagine-bot retention [--apply]       delete what is older than each team's policy
    imagine-bot export ...                a user's history or a thread as a zip
    imagine-bot requeue [--apply]         publish again jobs whose messages a broker lost
    imagine-bot train-builtin             retrain the built-in model from scratch

Imports are per subcommand, so `imagine-bot console` never loads what `worker` needs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    from engine.config import Settings


def _settings() -> Settings:
    from engine.config import get_settings

    return get_settings()


def _configure_logging(args: argparse.Namespace) -> None:
    from engine.logs import configure_logging, register_secrets

    ops = _settings().ops
    # The console is a terminal program: quiet unless asked. Servers log at the configured level.
    level = args.log_level or ("WARNING" if args.command == "console" else ops.log_level)
    configure_logging(level, ops.log_format)
    # Whatever the configuration calls a token, secret or password never reaches a log line.
    register_secrets(
        value
        for name, value in os.environ.items()
        if name.startswith("IMAGINE_") and any(w in name for w in ("TOKEN", "SECRET", "PASSWORD"))
    )


def cmd_console(args: argparse.Namespace) -> int:
    from bot.console.adapter import ConsoleAdapter
    from bot.runtime import build_bot_runtime

    runtime = build_bot_runtime(_settings())
    worker = runtime.start_embedded_worker()

    async def main() -> int:
        adapter = ConsoleAdapter(runtime, user=args.user, out_dir=Path(args.out))
        try:
            if args.script:
                lines = Path(args.script).read_text().splitlines()
                return await adapter.run_script(lines)
            return await adapter.run_interactive()
        finally:
            await runtime.close()

    try:
        failures = asyncio.run(main())
    finally:
        if worker is not None:
            worker.stop()
    return 1 if failures else 0


def cmd_worker(args: argparse.Namespace) -> int:
    from engine.render.factory import find_model
    from engine.render.loader import ModelUnavailable
    from engine.worker.app import GPU_QUEUE, build_app

    settings = _settings()
    if settings.render.backend != "noop":
        try:
            spec = find_model(settings.render.model, settings.data_dir)
        except ModelUnavailable as error:
            print(f"imagine-bot worker: cannot start: {error}", file=sys.stderr)
            return 2
        print(f"imagine-bot worker: model {spec.name} ({spec.family}) at {spec.path}", file=sys.stderr)
    app = build_app(settings)
    task = app.tasks["imagine.render"]
    if args.pool == "solo":
        # One process per GPU: load the model now so a broken model fails before any job, and
        # the first job does not pay for the load. (Never before a fork: torch in a forked child can hang.)
        try:
            task.runtime.renderer  # noqa: B018
        except Exception as error:  # noqa: BLE001
            print(f"imagine-bot worker: cannot load the model: {error}", file=sys.stderr)
            return 2
        from engine.metrics import WORKER_READY

        WORKER_READY.set(1)
        # The solo pool runs the task on the thread that would send AMQP heartbeats, so a render
        # longer than two heartbeats made RabbitMQ drop the connection and hand the job to a
        # second worker. Without heartbeats a killed worker's socket still closes at once (the
        # kernel closes it) and a lost machine is caught by the job lease (engine/worker/recovery.py).
        app.conf.broker_heartbeat = 0
    _start_worker_ops(settings, app, task, loaded=args.pool == "solo")
    from engine.worker.recovery import start_sweeper

    start_sweeper(app, settings)
    argv = [
        "worker",
        f"--pool={args.pool}",
        f"--concurrency={args.concurrency}",
        f"--queues={args.queues or GPU_QUEUE}",
        f"--loglevel={args.loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    # Every worker needs a node name of its own: on RabbitMQ a second worker with the same name
    # (two workers on one host, or a replacement started before the killed one's connection is
    # gone) cannot declare its exclusive remote-control queue and exits at start.
    argv.append(f"--hostname={args.hostname or f'imagine-{os.getpid()}@%h'}")
    app.worker_main(argv)
    return 0


def _start_worker_ops(settings: Settings, app: Celery, task: Any, *, loaded: bool) -> None:
    """/metrics, /healthz, /readyz for a worker (metrics are this process's: use the solo pool)."""
    if not settings.ops.port:
        return
    from engine.ops import OpsServer, broker_check, database_check
    from engine.store.db import Database

    def model_check() -> None:
        if loaded and task.runtime._renderer is None:
            raise RuntimeError("the model is not loaded")

    OpsServer(
        settings.ops.host,
        settings.ops.port,
        checks={
            "database": database_check(Database(settings.database_url, pool_size=1, max_overflow=1)),
            "broker": broker_check(app),
            "model": model_check,
        },
    ).start()


def cmd_migrate(args: argparse.Namespace) -> int:
    from engine.store.migrate import downgrade, upgrade

    url = _settings().database_url
    if args.downgrade:
        downgrade(url, args.downgrade)
    else:
        upgrade(url, args.revision)
    print(f"database schema at {args.downgrade or args.revision}")
    return 0


def cmd_discord(args: argparse.Namespace) -> int:
    from bot.discord.app import main as run_discord

    return run_discord()


def cmd_slack(args: argparse.Namespace) -> int:
    from bot.slack.app import main as run_slack

    return run_slack()


def cmd_gallery(args: argparse.Namespace) -> int:
    from bot.gallery.app import run_gallery

    return run_gallery(_settings())


def cmd_retention(args: argparse.Namespace) -> int:
    import json

    from engine.image_files import ImageStore
    from engine.retention import apply_retention
    from engine.store.db import Database

    settings = _settings()
    report = apply_retention(
        Database(settings.database_url),
        ImageStore(settings.images_dir),
        default_days=settings.retention.default_days,
        apply=args.apply,
    )
    print(json.dumps(report.to_dict(), indent=2))
    if not args.apply:
        print("(dry run: nothing was deleted; add --apply to delete)", file=sys.stderr)
    return 0


def cmd_requeue(args: argparse.Namespace) -> int:
    import json
    from datetime import timedelta

    from engine.store.db import Database
    from engine.worker.app import build_app
    from engine.worker.queue import CeleryJobQueue
    from engine.worker.recovery import requeue_stuck

    settings = _settings()
    running_minutes = args.running_minutes or max(1, -(-int(settings.worker.lease_s) // 60))
    found = requeue_stuck(
        Database(settings.database_url),
        CeleryJobQueue(build_app(settings)),
        queued_for=timedelta(minutes=args.queued_minutes),
        running_for=timedelta(minutes=running_minutes),
        apply=args.apply,
    )
    print(json.dumps(found))
    if not args.apply:
        print("(dry run: nothing was published; add --apply)", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from engine.domain.errors import UserFacingError
    from engine.image_files import ImageStore
    from engine.retention import export_zip
    from engine.store.db import Database

    settings = _settings()
    try:
        data = export_zip(
            Database(settings.database_url),
            ImageStore(settings.images_dir),
            platform=args.platform,
            team=args.team,
            user=args.user,
            thread=args.thread,
        )
    except UserFacingError as error:
        print(f"imagine-bot export: {error.message}", file=sys.stderr)
        return 2
    Path(args.out).write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes)")
    return 0


def cmd_train_builtin(args: argparse.Namespace) -> int:
    from engine.builtin.train import main as train_main

    return train_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagine-bot", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--log-level", default=None, help="default: WARNING for the console, IMAGINE_OPS_LOG_LEVEL for servers"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    console = sub.add_parser("console", help="the local front-end (interactive, or --script FILE)")
    console.add_argument("--script", help="run the commands in FILE, one per line, then exit")
    console.add_argument("--user", default=os.environ.get("USER", "local"), help="who you are")
    console.add_argument("--out", default="imagine-out", help="folder for delivered PNGs")
    console.set_defaults(func=cmd_console)

    worker = sub.add_parser("worker", help="a Celery render worker (run one per GPU)")
    worker.add_argument("--pool", default="solo", choices=["solo", "prefork", "threads"])
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--queues", default=None)
    worker.add_argument("--hostname", default=None)
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=cmd_worker)

    sub.add_parser("discord", help="the Discord bot (configured by IMAGINE_DISCORD_* variables)").set_defaults(
        func=cmd_discord
    )
    sub.add_parser("slack", help="the Slack bot (configured by IMAGINE_SLACK_* variables)").set_defaults(func=cmd_slack)

    migrate = sub.add_parser("migrate", help="upgrade (or downgrade) the database schema")
    migrate.add_argument("--revision", default="head")
    migrate.add_argument("--downgrade", metavar="REVISION", default=None)
    migrate.set_defaults(func=cmd_migrate)

    sub.add_parser("gallery", help="the team gallery web page (IMAGINE_GALLERY_*)").set_defaults(func=cmd_gallery)

    retention = sub.add_parser("retention", help="delete jobs and images older than each team's policy")
    retention.add_argument("--apply", action="store_true", help="really delete (default: report only)")
    retention.set_defaults(func=cmd_retention)

    requeue = sub.add_parser("requeue", help="publish again jobs whose queue messages were lost")
    requeue.add_argument("--queued-minutes", type=int, default=30, help="queued longer than this")
    requeue.add_argument(
        "--running-minutes",
        type=int,
        default=0,
        help="running with no heartbeat for longer than this (default: the lease)",
    )
    requeue.add_argument("--apply", action="store_true", help="really publish (default: report only)")
    requeue.set_defaults(func=cmd_requeue)

    export = sub.add_parser("export", help="a user's history or a thread as a zip (PNGs + manifest.json)")
    export.add_argument("--platform", required=True, choices=["discord", "slack", "console"])
    export.add_argument("--team", required=True, help="guild id, workspace id, or 'local' for the console")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", help="the user's platform id")
    which.add_argument("--thread", type=int, help="any job of the thread")
    export.add_argument("--out", required=True, help="the zip file to write")
    export.set_defaults(func=cmd_export)

    train = sub.add_parser("train-builtin", help="retrain the built-in model (see --help)", add_help=False)
    train.add_argument("rest", nargs=argparse.REMAINDER)
    train.set_defaults(func=cmd_train_builtin)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train-builtin"]:
        # Its options are the trainer's own: argparse's REMAINDER would not pass on a first
        # argument that looks like an option (`train-builtin --base ...`).
        from engine.builtin.train import main as train_main

        return train_main(argv[1:])
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    return args.func(args)
