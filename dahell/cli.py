"""`python -m dahell COMMAND`: the daemon and the operator's tools.

Exit codes: 0 success; 1 the work failed (a file unreadable, a stage failed); 2 bad usage or
configuration; 3 the database is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any

from dahell import config as config_mod
from dahell import log as log_mod
from dahell.errors import ConfigError, DahellError, DatabaseUnavailable
from dahell.stages.base import Stage

STAGE_NAMES = ("scraper", "loader", "vectorizer", "groups")
EXIT_FAILED, EXIT_USAGE, EXIT_DATABASE = 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dahell", description="A live, searchable copy of the Dropi catalog."
    )
    parser.add_argument("--config", help="path to dahell.toml (default: $DAHELL_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the pipeline daemon")
    run.add_argument(
        "--stages",
        default=",".join(STAGE_NAMES),
        help="comma-separated stages to run (default: scraper,loader,vectorizer,groups)",
    )
    run.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="drain all work (journal, queues, pending rows) and exit 0",
    )

    load = sub.add_parser("load", help="load raw_products_*.jsonl files (also .gz)")
    load.add_argument("files", nargs="+", type=Path, metavar="FILE")
    load.add_argument("--json", action="store_true", help="print one JSON object")

    status = sub.add_parser("status", help="the pipeline's counts, like a health report")
    status.add_argument("--json", action="store_true", help="print one JSON object")

    sub.add_parser("migrate", help="apply pending database migrations and exit")

    similar = sub.add_parser("similar", help="nearest products by image")
    similar.add_argument("product_id", type=int, metavar="PRODUCT_ID")
    similar.add_argument("--k", type=int, default=10, help="how many neighbours (default 10)")
    similar.add_argument("--json", action="store_true", help="print one JSON object")

    export = sub.add_parser("export-model", help="export SigLIP to ONNX (needs [export])")
    _add_export_arguments(export)

    reembed = sub.add_parser(
        "reembed", help="drop every embedding and queue every product (after a model change)"
    )
    reembed.add_argument("--yes", action="store_true", help="do it (without: only say what)")

    backup = sub.add_parser("backup", help="pg_dump the database (custom format)")
    _add_backup_arguments(backup)

    top = sub.add_parser("top", help="products that sell, their margin and same-item suppliers")
    _add_top_arguments(top)

    demo = sub.add_parser("demo", help="the whole pipeline against a local Dropi simulator")
    demo.add_argument("--products", type=int, default=300, help="catalog size (default 300)")
    demo.add_argument(
        "--days", type=int, default=14, help="simulated days, one quick pass each (default 14)"
    )
    demo.add_argument(
        "--no-wait", action="store_true", help="exit after the summary instead of serving"
    )
    _accept_config_after_command(sub.choices.values())
    return parser


def _accept_config_after_command(commands: Iterable[argparse.ArgumentParser]) -> None:
    """`dahell run --config F` works as well as `dahell --config F run`, for every command.

    SUPPRESS leaves the top-level value in place when the command's own option is not given.
    """
    for command in commands:
        command.add_argument(
            "--config", default=argparse.SUPPRESS, help="path to dahell.toml ($DAHELL_CONFIG)"
        )


def _add_backup_arguments(parser: argparse.ArgumentParser) -> None:
    from dahell import backup

    backup.add_arguments(parser)


def _add_top_arguments(parser: argparse.ArgumentParser) -> None:
    from dahell.research import top_command

    top_command.add_arguments(parser)


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    from dahell import export

    export.add_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_mod.load(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"dahell: {exc}\n")
        return EXIT_USAGE
    daemon = args.command == "run"
    log_mod.configure(
        config.log.level if daemon else _quiet_level(args.command),
        config.log.format,
        stream=sys.stdout if daemon else sys.stderr,
    )
    log_mod.set_secrets(config.secrets())
    handler = COMMANDS[args.command]
    try:
        return handler(config, args)
    except DatabaseUnavailable as exc:
        sys.stderr.write(f"dahell: database unavailable: {exc}\n")
        return EXIT_DATABASE
    except DahellError as exc:
        sys.stderr.write(f"dahell: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _quiet_level(command: str) -> str:
    """Log level of a command that is not the daemon: its own output is the story.

    The demo prints progress and a summary; an image the simulator serves broken on purpose is
    counted there, not worth a warning line in the middle of it.
    """
    return "error" if command == "demo" else "warning"


def _run_async(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a Linux/macOS dependency
        return asyncio.run(coro)


def build_stages(names: list[str]) -> list[Stage]:
    """The stage objects for `names`, in pipeline order."""
    stages: list[Stage] = []
    for name in STAGE_NAMES:
        if name not in names:
            continue
        if name == "loader":
            from dahell.stages.loader import LoaderStage

            stages.append(LoaderStage())
        elif name == "scraper":
            from dahell.stages.scraper import ScraperStage

            stages.append(ScraperStage())
        elif name == "groups":
            from dahell.stages.groups import GroupsStage

            stages.append(GroupsStage())
        else:
            from dahell.stages.vectorizer import VectorizerStage

            stages.append(VectorizerStage())
    return stages


def cmd_run(config: config_mod.Config, args: argparse.Namespace) -> int:
    from dahell.daemon import run_daemon

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown or not stages:
        sys.stderr.write(
            f"dahell: unknown stage(s) {', '.join(unknown) or '(none)'};"
            f" choose from {', '.join(STAGE_NAMES)}\n"
        )
        return EXIT_USAGE
    return _run_async(
        run_daemon(
            config,
            build_stages(stages),
            exit_when_idle=args.exit_when_idle,
            config_path=args.config,
        )
    )


def cmd_load(config: config_mod.Config, args: argparse.Namespace) -> int:
    from dahell.load_command import load_files

    return _run_async(load_files(config, args.files, as_json=args.json))


def cmd_status(config: config_mod.Config, args: argparse.Namespace) -> int:
    from dahell.status_command import show_status

    return _run_async(show_status(config, as_json=args.json))


def cmd_migrate(config: config_mod.Config, args: argparse.Namespace) -> int:
    from dahell import db

    async def migrate() -> int:
        dsn, embedded = await db.resolve_dsn(config)
        try:
            applied = await db.apply_migrations(dsn, config.database.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            raise DatabaseUnavailable(db.describe_error(exc)) from exc
        finally:
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)
        sys.stdout.write(
            ("applied: " + ", ".join(applied) if applied else "nothing to apply: up to date") + "\n"
        )
        return 0

    return _run_async(migrate())


def cmd_similar(config: config_mod.Config, args: argparse.Namespace) -> int:
    from dahell.similar_command import show_similar

    return _run_async(show_similar(config, args.product_id, args.k, as_json=args.json))


def cmd_export(config: config_mod.Config, args: argparse.Namespace) -> int:
    from dahell import export

    return export.main(args)


def cmd_reembed(config: config_mod.Config, args: argparse.Namespace) -> int:
    from dahell.embedding_backlog import reembed_command

    return _run_async(reembed_command(config, yes=args.yes))


def cmd_backup(config: config_mod.Config, args: argparse.Namespace) -> int:
    from dahell import backup

    return _run_async(backup.main(config, args))


def cmd_top(config: config_mod.Config, args: argparse.Namespace) -> int:
    from dahell.research import top_command

    return _run_async(top_command.main(config, args))


def cmd_demo(config: config_mod.Config, args: argparse.Namespace) -> int:
    from dahell.demo import run_demo

    days = max(2, args.days)
    return _run_async(run_demo(config, products=args.products, wait=not args.no_wait, days=days))


COMMANDS: dict[str, Callable[[config_mod.Config, argparse.Namespace], int]] = {
    "run": cmd_run,
    "load": cmd_load,
    "status": cmd_status,
    "migrate": cmd_migrate,
    "similar": cmd_similar,
    "export-model": cmd_export,
    "backup": cmd_backup,
    "reembed": cmd_reembed,
    "demo": cmd_demo,
    "top": cmd_top,
}
