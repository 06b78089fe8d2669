#!/usr/bin/env python3
"""Queue and inspect headless-wan tasks.

    add_task.py --type noop --params '{"seconds": 1}' [--priority N] [--depends-on ID ...]
                [--project-id P] [--id ID] [--max-attempts N] [--timeout-seconds S]
    add_task.py --jsonl tasks.jsonl           one task per line: {"task_type", "params", "id"?, "depends_on"?, ...}
    add_task.py status ID [--json]
    add_task.py list [--status S] [--type T] [--project-id P] [--limit N] [--json]
    add_task.py retry ID | cancel ID | watch ID
    add_task.py regenerate ID --params '{"prompt": "..."}'   (re-run one finished task with changed params)
    add_task.py pause [--type T] [--project P]    stop claims of Queued tasks (running tasks finish)
    add_task.py resume [--type T] [--project P] | resume --all
    add_task.py prioritize ID N                   a Queued task's new priority (higher runs first)
    add_task.py limit PROJECT N | limit PROJECT none   at most N running tasks of the project

Adding also takes --idempotency-key K (a repeat in the same project prints the first task's id and
inserts nothing) and --start-within S (not claimed within S seconds: it fails "expired before it started").

Every form takes --db URL (default $HEADLESS_DB_URL or sqlite:///tasks.db). Errors exit non-zero with a
one-line reason.

Local files the params name (images, videos, LoRAs: the fields each task type marks as files) are resolved
against the current directory, refused at once when missing, and staged where every worker of the database
reads them (source.local_files): `public/files/inputs/` beside a SQLite database, `<--output-dir>/inputs/`
otherwise (the workers' shared --output-dir). URLs and other tasks' outputs are left as they are.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from source.errors import InvalidInput
from source.local_files import NoSharedFolder, Stager, stage_params
from source.settings import DEFAULT_DB_URL, SettingsError, settings
from source.storage import Storage
from source.store.task_store import StoreError, TaskStore, parse_params
from source.task_context import TransientError
from source.task_status import TERMINAL, TaskStatus

COMMANDS = ("status", "list", "retry", "cancel", "watch", "regenerate", "keys", "webhook-secret", "pause", "resume",
            "prioritize", "limit")


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


def _staging_args(p: argparse.ArgumentParser) -> None:
    """Where local files are staged: --output-dir for non-SQLite databases, or a Supabase project."""
    p.add_argument("--output-dir", type=Path, default=None,
                   help="non-SQLite databases: the folder every worker shares (their --output-dir; default "
                        "$HEADLESS_OUTPUT_DIR); local files are staged under its inputs/")
    p.add_argument("--supabase-url", default=None,
                   help="stage local files in this Supabase project's Storage instead (default $SUPABASE_URL)")
    p.add_argument("--supabase-key", default=None, help="Storage key (default $SUPABASE_SERVICE_ROLE_KEY, ...)")
    p.add_argument("--storage-bucket", default=None, help="bucket (default $SUPABASE_VIDEO_BUCKET or image_uploads)")


def stager_for(args: argparse.Namespace) -> Stager:
    from source.supabase_outputs import SupabaseOutputs, SupabaseStorageConfig

    try:
        config = SupabaseStorageConfig.from_environment(args.supabase_url, args.supabase_key, args.storage_bucket)
    except ValueError as exc:  # a URL without a key
        raise CliError(str(exc)) from None
    return Stager(lambda: shared_storage(args), SupabaseOutputs(config) if config is not None else None)


def shared_storage(args: argparse.Namespace) -> Storage:
    """Where the workers of args.db read staged files: beside a SQLite file; for other databases the shared
    folder named by --output-dir or $HEADLESS_OUTPUT_DIR (the default ./outputs is relative to each process's
    own directory, so it is no folder the CLI and the workers share)."""
    if args.db.startswith("sqlite:///") and ":memory:" not in args.db:
        return Storage.for_database(args.db)
    shared = args.output_dir or (settings().output_dir if settings().output_dir != Path("outputs") else None)
    if shared is None:
        raise NoSharedFolder("local files need a folder every worker reads: pass --output-dir (the workers' "
                             "--output-dir) or set $HEADLESS_OUTPUT_DIR, or configure Supabase Storage")
    return Storage.for_database(args.db, outputs_dir=shared)


def checked_params(task_type: str, params: Any, stager: Stager, only: dict[str, Any] | None = None,
                   where: str = "") -> dict[str, Any]:
    """Params validated, with every local file they name staged (the stored params name the copies)."""
    from source.handler_registry import validate_params

    try:
        return stage_params(validate_params(task_type, params), params, stager, cwd=Path.cwd(), only=only)
    except InvalidInput as exc:  # MissingFile included: one line naming the field and the path
        raise CliError(f"{where}{exc}") from None
    except (OSError, TransientError) as exc:  # unreadable file, full disk, refused or failed upload
        raise CliError(f"{where}could not stage a file: {exc}") from None


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
    where: list[str] = []  # for messages: the JSON-lines file and line of each spec
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
                              timeout_seconds=item.get("timeout_seconds"),
                              idempotency_key=item.get("idempotency_key"), start_within=item.get("start_within")))
            where.append(f"{path}:{n}: ")
    else:
        if not args.type or args.params is None:
            raise CliError("give --type and --params (or --jsonl FILE, or a command: " + ", ".join(COMMANDS) + ")")
        specs.append(dict(task_type=args.type, params=load_params(args.params), task_id=args.id,
                          priority=args.priority, depends_on=args.depends_on or [], project_id=args.project_id,
                          max_attempts=args.max_attempts, timeout_seconds=args.timeout_seconds,
                          idempotency_key=args.idempotency_key, start_within=args.start_within))
        where.append("")
    if not args.no_validate:  # --no-validate inserts params as given: nothing is checked or staged
        stager = stager_for(args)
        for spec, at in zip(specs, where):
            spec["params"] = checked_params(spec["task_type"], spec["params"], stager, where=at)
    for spec in specs:
        if spec["max_attempts"] is not None and int(spec["max_attempts"]) < 1:
            raise CliError("--max-attempts must be at least 1")
        if spec["start_within"] is not None and not float(spec["start_within"]) > 0:
            raise CliError("--start-within must be a positive number of seconds")
    store = store_factory()
    for task_id in store.add_tasks(specs):
        print(task_id)
    return 0


def cmd_status(args: argparse.Namespace, store: TaskStore) -> int:
    task = store.get(args.id)
    if task is None:
        raise CliError(f"no task with id {args.id}")
    if args.json:
        out = _jsonable(task)
        if task.get("task_type") == "storyboard":  # the storyboard document as it stands, from its children
            from source.compose.storyboard import storyboard_state

            out["storyboard"] = storyboard_state(task, store.list_tasks(parent_task_id=task["id"], limit=100000))
        print(json.dumps(out, indent=2))
        return 0
    fields = ["id", "task_type", "status", "attempts", "max_attempts", "priority", "progress", "progress_message",
              "output_location", "error_message", "worker_id", "depends_on", "parent_task_id", "created_at",
              "generation_started_at", "generation_processed_at"]
    for f in fields:
        value = task.get(f)
        if value not in (None, [], ""):
            print(f"{f:24} {value}")
    return 0


def _scope(task_type: str | None, project_id: str | None) -> str:
    return " ".join([f"type {task_type}" if task_type else "every type",
                     f"in project {project_id}" if project_id else "in every project"])


def cmd_list(args: argparse.Namespace, store: TaskStore) -> int:
    rows = store.list_tasks(status=args.status, task_type=args.type, project_id=args.project_id, limit=args.limit)
    paused = store.paused_scopes()
    if args.json:
        print(json.dumps([_jsonable(r) for r in rows], indent=2))
        return 0
    for scope in paused:  # before the table: a paused queue explains why nothing runs
        print(f"paused: {_scope(scope['task_type'], scope['project_id'])} (since {str(scope['paused_at'])[:19]})")
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


def cmd_keys(args: argparse.Namespace, store: TaskStore) -> int:
    from source.store.api_store import ApiStore

    api = ApiStore(store)
    if args.action == "create":
        if not args.project:
            raise CliError("keys create needs --project P")
        key_id, key = api.create_key(args.project, admin=args.admin)
        print(f"key id {key_id} for project {args.project}{' (admin)' if args.admin else ''};"
              " the key is shown only now:", file=sys.stderr)
        print(key)
        return 0
    if not args.key_id:
        raise CliError("keys revoke needs KEY_ID")
    if not api.revoke_key(args.key_id):
        raise CliError(f"no live key {args.key_id}")
    print(f"revoked {args.key_id}")
    return 0


def cmd_fleet(args: argparse.Namespace, store: TaskStore) -> int:
    if args.command == "pause":
        store.pause(args.type, args.project)
        print(f"paused: {_scope(args.type, args.project)}")
    elif args.command == "resume":
        if args.all:
            print(f"resumed {store.resume(everything=True)} paused scope(s)")
        elif store.resume(args.type, args.project):
            print(f"resumed: {_scope(args.type, args.project)}")
        else:
            scopes = [_scope(s["task_type"], s["project_id"]) for s in store.paused_scopes()]
            raise CliError(f"{_scope(args.type, args.project)} is not paused; paused: "
                           + ("; ".join(scopes) if scopes else "nothing"))
    elif args.command == "prioritize":
        store.prioritize(args.id, args.priority)
        print(f"task {args.id} now has priority {args.priority}")
    elif args.command == "limit":
        if args.max_running.lower() in ("none", "unlimited"):
            store.set_project_limit(args.project_id, None)
            print(f"project {args.project_id}: no running limit")
        else:
            try:
                n = int(args.max_running)
            except ValueError:
                raise CliError(f"limit takes a number of running tasks or 'none', not {args.max_running!r}") from None
            store.set_project_limit(args.project_id, n)
            print(f"project {args.project_id}: at most {n} running task(s)")
    return 0


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
        task = store.get(args.id)
        if task is None:
            raise CliError(f"no task with id {args.id}")
        try:
            old = parse_params(task["params"])
        except ValueError as exc:
            raise CliError(f"task {args.id}: {exc}") from None
        if isinstance(old, dict):  # the patch's files are staged; the task's other params stay as they are
            patch = checked_params(task["task_type"], {**old, **patch}, stager_for(args), only=patch)
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
    add.add_argument("--no-validate", action="store_true",
                     help="insert without checking params (local files are then not staged either)")
    _staging_args(add)
    add.add_argument("--idempotency-key", default=None,
                     help="a repeat with the same key (same project) inserts nothing and prints the first task's id")
    add.add_argument("--start-within", type=float, default=None, metavar="S",
                     help="not claimed within S seconds: the task fails 'expired before it started'")

    cmd = argparse.ArgumentParser(prog="add_task.py")
    _db_arg(cmd)  # --db may come before or after the command
    sub = cmd.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        sp = sub.add_parser(name)
        _db_arg(sp, default=argparse.SUPPRESS)
        if name == "keys":  # HTTP API keys (serve.py): `keys create --project P [--admin]`, `keys revoke KEY_ID`
            sp.add_argument("action", choices=("create", "revoke"))
            sp.add_argument("key_id", nargs="?")
            sp.add_argument("--project")
            sp.add_argument("--admin", action="store_true", help="the key sees every project's tasks")
            continue
        if name == "webhook-secret":  # a new whsec_ signing secret for a project's webhooks (printed once)
            sp.add_argument("--project", required=True)
            continue
        if name in ("pause", "resume"):
            sp.add_argument("--type", default=None, help="only this task type (default every type)")
            sp.add_argument("--project", default=None, help="only this project (default every project)")
            if name == "resume":
                sp.add_argument("--all", action="store_true", help="lift every pause")
            continue
        if name == "limit":
            sp.add_argument("project_id")
            sp.add_argument("max_running", help="a number, or 'none' for unlimited")
            continue
        if name != "list":
            sp.add_argument("id")
        if name == "prioritize":
            sp.add_argument("priority", type=int)
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
            _staging_args(sp)
    return add, cmd


def _first_word(argv: list[str]) -> str | None:
    """The first argument that is not --db or its value: a command name, or else the add form."""
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--db":
            skip = True
        elif not a.startswith("--db="):
            return a
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    is_command = _first_word(argv) in COMMANDS
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
            if args.command == "keys":
                return cmd_keys(args, store)
            if args.command == "webhook-secret":
                from source.store.api_store import ApiStore, WebhookStore

                print(WebhookStore(ApiStore(store)).new_secret(args.project))
                return 0
            if args.command in ("pause", "resume", "prioritize", "limit"):
                return cmd_fleet(args, store)
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
