#!/usr/bin/env python3
"""Queue and inspect headless-wan tasks.

    add_task.py --type noop --params '{"seconds": 1}' [--priority N] [--depends-on ID ...]
                [--project-id P] [--id ID] [--max-attempts N] [--timeout-seconds S]
    add_task.py --jsonl tasks.jsonl           one task per line: {"task_type", "params", "id"?, "depends_on"?, ...}
    add_task.py status ID [--json]
    add_task.py list [--status S] [--type T] [--project-id P] [--limit N] [--json]
    add_task.py retry ID | cancel ID | watch ID
    add_task.py regenerate ID --params '{"prompt": "..."}'   (re-run one finished task with changed params)

Every form takes --db URL (default $HEADLESS_DB_URL or sqlite:///tasks.db). Errors exit non-zero with a
one-line reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

from source.settings import DEFAULT_DB_URL, SettingsError, settings  # noqa: E402
from source.store.task_store import StoreError, TaskStore, parse_params  # noqa: E402
from source.task_context import InvalidInput  # noqa: E402
from source.task_status import TERMINAL, TaskStatus  # noqa: E402

COMMANDS = ("status", "list", "retry", "cancel", "watch", "regenerate")


class CliError(Exception):
    pass


def _db_arg(p: argparse.ArgumentParser, default: str | None = None) -> None:
    default = default or settings().db_url  # $HEADLESS_DB_URL or the default, read once
    p.add_argument("--db", default=default, help=f"database URL (default $HEADLESS_DB_URL or {DEFAULT_DB_URL})")


def load_params(text: str) -> Any:
    """JSON text, or @FILE holding JSON."""
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise CliError(f"params file not found: {path}")
        text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"params are not valid JSON: {exc}") from None


def validate(task_type: str, params: Any) -> None:
    from source.handler_registry import validate_params

    try:
        validate_params(task_type, params)
    except InvalidInput as exc:
        raise CliError(str(exc)) from None


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if key in ("params", "result") and value is not None:
            try:
                value = parse_params(value)
            except ValueError:
                pass
        out[key] = value if isinstance(value, (str, int, float, bool, dict, list, type(None))) else str(value)
    return out


def cmd_add(args: argparse.Namespace, store_factory) -> int:
    specs: list[dict[str, Any]] = []
    if args.jsonl:
        path = Path(args.jsonl)
        if not path.is_file():
            raise CliError(f"file not found: {path}")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CliError(f"{path}:{n}: not valid JSON: {exc}") from None
            if not isinstance(item, dict) or "task_type" not in item:
                raise CliError(f"{path}:{n}: each line needs an object with task_type and params")
            specs.append(dict(task_type=item["task_type"], params=item.get("params", {}), task_id=item.get("id"),
                              priority=item.get("priority", 0), depends_on=item.get("depends_on") or [],
                              project_id=item.get("project_id", args.project_id),
                              max_attempts=item.get("max_attempts", args.max_attempts),
                              timeout_seconds=item.get("timeout_seconds")))
    else:
        if not args.type or args.params is None:
            raise CliError("give --type and --params (or --jsonl FILE, or a command: " + ", ".join(COMMANDS) + ")")
        specs.append(dict(task_type=args.type, params=load_params(args.params), task_id=args.id,
                          priority=args.priority, depends_on=args.depends_on or [], project_id=args.project_id,
                          max_attempts=args.max_attempts, timeout_seconds=args.timeout_seconds))
    if not args.no_validate:
        for spec in specs:
            validate(spec["task_type"], spec["params"])
    for spec in specs:
        if spec["max_attempts"] is not None and int(spec["max_attempts"]) < 1:
            raise CliError("--max-attempts must be at least 1")
    store = store_factory()
    for task_id in store.add_tasks(specs):
        print(task_id)
    return 0


def cmd_status(args: argparse.Namespace, store: TaskStore) -> int:
    task = store.get(args.id)
    if task is None:
        raise CliError(f"no task with id {args.id}")
    if args.json:
        print(json.dumps(_jsonable(task), indent=2))
        return 0
    fields = ["id", "task_type", "status", "attempts", "max_attempts", "priority", "progress", "progress_message",
              "output_location", "error_message", "worker_id", "depends_on", "parent_task_id", "created_at",
              "generation_started_at", "generation_processed_at"]
    for f in fields:
        value = task.get(f)
        if value not in (None, [], ""):
            print(f"{f:24} {value}")
    return 0


def cmd_list(args: argparse.Namespace, store: TaskStore) -> int:
    rows = store.list_tasks(status=args.status, task_type=args.type, project_id=args.project_id, limit=args.limit)
    if args.json:
        print(json.dumps([_jsonable(r) for r in rows], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for column in ("id", "type", "status", "try", "progress", "created", "output / error"):
        table.add_column(column, overflow="fold")
    for r in rows:
        progress = "" if r.get("progress") is None else f"{100 * float(r['progress']):.0f}%"
        detail = r.get("output_location") or r.get("error_message") or r.get("progress_message") or ""
        table.add_row(r["id"], r["task_type"], r["status"], f"{r.get('attempts', 0)}/{r.get('max_attempts', '')}",
                      progress, str(r.get("created_at"))[:19], str(detail)[:120])
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    return 0


def cmd_watch(args: argparse.Namespace, store: TaskStore) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    task = store.get(args.id)
    if task is None:
        raise CliError(f"no task with id {args.id}")
    with Progress(TextColumn("[bold]{task.fields[status]}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), TextColumn("{task.fields[message]}")) as bar:
        handle = bar.add_task("task", total=1.0, status=task["status"], message="")
        while True:
            task = store.get(args.id)
            bar.update(handle, completed=float(task.get("progress") or 0), status=task["status"],
                       message=(task.get("progress_message") or "")[:60])
            if task["status"] in TERMINAL:
                break
            time.sleep(args.interval)
    print(f"{task['status']}: {task.get('output_location') or task.get('error_message') or ''}")
    return 0 if task["status"] == TaskStatus.COMPLETE else 1


def cmd_simple(args: argparse.Namespace, store: TaskStore) -> int:
    if args.command == "retry":
        ids = store.retry(args.id)
        print(f"re-queued {len(ids)} task(s): {' '.join(ids)}")
    elif args.command == "cancel":
        status = store.request_cancel(args.id)
        print("cancelled" if status == TaskStatus.CANCELLED else
              "cancel requested; the running task stops within seconds" if status == TaskStatus.IN_PROGRESS else
              f"task is already {status}")
    elif args.command == "regenerate":
        patch = load_params(args.params)
        if not isinstance(patch, dict):
            raise CliError("--params must be a JSON object of the params to change")
        ids = store.regenerate(args.id, patch)
        print(f"re-queued {len(ids)} task(s): {' '.join(ids)}")
    return 0


def build_parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    add = argparse.ArgumentParser(prog="add_task.py", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    _db_arg(add)
    add.add_argument("--type", help="task type, e.g. travel_orchestrator, generate, noop")
    add.add_argument("--params", help="JSON object, or @FILE")
    add.add_argument("--jsonl", help="insert every task of a JSON-lines file (one transaction)")
    add.add_argument("--priority", type=int, default=0, help="higher runs first")
    add.add_argument("--depends-on", nargs="+", default=[], metavar="ID", help="task(s) that must complete first")
    add.add_argument("--project-id", default=None)
    add.add_argument("--id", default=None, help="the task id (default: a new UUID)")
    add.add_argument("--max-attempts", type=int, default=3)
    add.add_argument("--timeout-seconds", type=float, default=None)
    add.add_argument("--no-validate", action="store_true", help="insert without checking params")

    cmd = argparse.ArgumentParser(prog="add_task.py")
    _db_arg(cmd)  # --db may come before or after the command
    sub = cmd.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        sp = sub.add_parser(name)
        _db_arg(sp, default=argparse.SUPPRESS)
        if name != "list":
            sp.add_argument("id")
        if name == "status":
            sp.add_argument("--json", action="store_true")
        if name == "list":
            sp.add_argument("--status")
            sp.add_argument("--type")
            sp.add_argument("--project-id")
            sp.add_argument("--limit", type=int, default=50)
            sp.add_argument("--json", action="store_true")
        if name == "watch":
            sp.add_argument("--interval", type=float, default=0.5)
        if name == "regenerate":
            sp.add_argument("--params", required=True, help="JSON object of params to change, or @FILE")
    return add, cmd


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    is_command = any(a in COMMANDS for a in argv if not a.startswith("-")) and not any(
        a in ("--type", "--jsonl") for a in argv)
    try:
        add_parser, cmd_parser = build_parsers()  # inside: a malformed setting is a one-line error too
        if not is_command:
            args = add_parser.parse_args(argv)
            return cmd_add(args, lambda: TaskStore(args.db))
        args = cmd_parser.parse_args(argv)
        store = TaskStore(args.db)
        try:
            if args.command == "status":
                return cmd_status(args, store)
            if args.command == "list":
                return cmd_list(args, store)
            if args.command == "watch":
                return cmd_watch(args, store)
            return cmd_simple(args, store)
        finally:
            store.close()
    except (CliError, StoreError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - database unreachable and the like: one line, not a traceback
        print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
