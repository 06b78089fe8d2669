#!/usr/bin/env python3
"""headless-wan worker: claims ready tasks from the database and runs them, for days.

    python headless.py --db sqlite:///tasks.db            # embedded default
    python headless.py --db postgresql://user@host/db     # many machines, one queue
    python headless.py --supabase-url URL --supabase-access-token KEY   # a Supabase project, over HTTP
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from source.downloads import private_networks_from
from source.event_log import EventLog
from source.settings import DEFAULT_DB_URL, Settings, SettingsError, configure
from source.storage import Storage
from source.store.rest_store import SupabaseRestStore, WorkerRefused, is_personal_token
from source.store.task_store import TaskStore, redact_url
from source.supabase_outputs import SupabaseOutputs, SupabaseStorageConfig
from source.worker import Worker, WorkerConfig

REPO = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # Defaults come from WorkerConfig and Settings (one copy each); flags left unset keep them.
    d = WorkerConfig(worker_id="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default=None, help=f"database URL (default $HEADLESS_DB_URL or {DEFAULT_DB_URL})")
    p.add_argument("--worker-id", default=None, help="unique name of this worker (default host-pid-random)")
    p.add_argument("--poll-interval", type=float, default=d.poll_interval,
                   help=f"seconds between polls when idle (default {d.poll_interval:g})")
    p.add_argument("--lease-seconds", type=float, default=d.lease_seconds,
                   help=f"a task whose worker stops renewing its lease for this long is taken over "
                        f"(default {d.lease_seconds:g})")
    p.add_argument("--max-tasks", type=int, default=d.max_tasks, help="exit after this many tasks")
    p.add_argument("--exit-when-idle", action="store_true", help="drain the ready work, then exit 0")
    p.add_argument("--task-types", default=None, help="comma-separated task types this worker takes")
    p.add_argument("--log-dir", type=Path, default=None, help="also write JSON-lines logs here")
    p.add_argument("--task-timeout", type=float, default=d.task_timeout,
                   help="default time limit per task in seconds (params timeout_seconds overrides)")
    p.add_argument("--shutdown-grace", type=float, default=d.shutdown_grace,
                   help=f"on SIGTERM, seconds the running task may finish before it is handed back "
                        f"(default {d.shutdown_grace:g})")
    p.add_argument("--retry-base-seconds", type=float, default=d.retry_base_seconds,
                   help=f"first retry delay (doubles each time; default {d.retry_base_seconds:g})")
    p.add_argument("--no-listen", action="store_true", help="poll only (no LISTEN/NOTIFY or change detection)")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="where outputs go for non-SQLite databases (default $HEADLESS_OUTPUT_DIR or ./outputs)")
    p.add_argument("--input-root", type=Path, action="append", default=[],
                   help="a folder task params may read files from (repeatable; also $HEADLESS_INPUT_ROOTS)")
    p.add_argument("--allow-private-urls", action="store_true",
                   help="let task inputs be downloaded from loopback, private and link-local addresses (a LAN "
                        "file server); refused by default (also $HEADLESS_ALLOW_PRIVATE_URLS=1)")
    p.add_argument("--keep-work-dirs", action="store_true", help="keep each task's scratch folder")
    p.add_argument("--supabase-url", default=None,
                   help="publish outputs to this Supabase project's Storage; output_location becomes the public "
                        "URL (default $SUPABASE_URL; needed when several machines share one database)")
    p.add_argument("--supabase-key", default=None,
                   help="Supabase key (prefer $SUPABASE_SERVICE_ROLE_KEY: a flag is visible in `ps`)")
    p.add_argument("--db-type", choices=("sqlite", "postgres", "supabase"), default=None,
                   help="the seed's flag: `supabase` runs the worker over the project's HTTP API (default "
                        "$DB_TYPE; implied by --supabase-access-token without --db)")
    p.add_argument("--supabase-access-token", default=None,
                   help="service-role key (all projects) or personal worker token (hwt_..., its owner's "
                        "projects) for the HTTP API (prefer $SUPABASE_ACCESS_TOKEN: a flag is visible in `ps`)")
    p.add_argument("--supabase-anon-key", default=None,
                   help="the project's anon key, sent with a personal worker token (default $SUPABASE_ANON_KEY)")
    p.add_argument("--storage-bucket", default=None,
                   help="Storage bucket for outputs (default $SUPABASE_VIDEO_BUCKET or image_uploads)")
    p.add_argument("--deliver-webhooks", action="store_true",
                   help="also deliver the HTTP API's webhooks from the outbox (servers do by default)")
    p.add_argument("--affinity-max-wait", type=float, default=d.affinity_max_wait,
                   help="model affinity: prefer tasks for the model this worker holds unless the next task in "
                        "priority order has waited this many seconds (default 300; 0 = strict priority + age)")
    p.add_argument("--preload-model", default=None, metavar="NAME",
                   help="load this catalog model at start, so the worker claims its tasks first")
    return p.parse_args(argv)


def build_settings(args: argparse.Namespace, env: Settings) -> Settings:
    """Flags over the environment, read once; the samples folder is always a readable input root."""
    roots = [REPO / "samples", *args.input_root, *env.input_roots]
    return env.replace(db_url=args.db or env.db_url, output_dir=args.output_dir or env.output_dir,
                       input_roots=tuple(dict.fromkeys(r.resolve() for r in roots)),
                       allow_private_urls="1" if args.allow_private_urls else env.allow_private_urls)


def preload(name: str, log: EventLog) -> bool:
    """Load a catalog model before the first claim (the engine logs model_loaded); the worker then reports
    it and claims its tasks first. A name the catalog does not know, or a model that cannot load, stops
    the worker at start."""
    from source.generation.engine import get_engine
    from source.generation.model_catalog import resolve_model

    try:
        get_engine().ensure(resolve_model(name), log=log.emit)
    except Exception as exc:  # noqa: BLE001 - reported in one line, the worker does not start half-ready
        log.emit("worker_stopped", reason="preload failed", model=name, error=f"{type(exc).__name__}: {exc}"[:500])
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = configure(build_settings(args, Settings.from_env()))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = WorkerConfig(
        poll_interval=args.poll_interval, lease_seconds=args.lease_seconds, max_tasks=args.max_tasks,
        exit_when_idle=args.exit_when_idle,
        task_types=[t.strip() for t in args.task_types.split(",") if t.strip()] if args.task_types else None,
        task_timeout=args.task_timeout, shutdown_grace=args.shutdown_grace,
        retry_base_seconds=args.retry_base_seconds, keep_work_dirs=args.keep_work_dirs,
        # A transaction pooler (Supabase port 6543) drops LISTEN sessions: poll there.
        listen=not args.no_listen and ":6543" not in cfg.db_url, affinity_max_wait=args.affinity_max_wait,
    )
    if args.worker_id:
        config.worker_id = args.worker_id
    log = EventLog(config.worker_id, args.log_dir)
    rest = _rest_mode(args, cfg)
    if rest:
        config.listen = False  # REST workers poll (short idle poll; no direct connection to LISTEN on)
        try:
            store = SupabaseRestStore(rest[0], rest[1],
                                      anon_key=args.supabase_anon_key or args.supabase_key or cfg.supabase_anon_key)
            store.check()
        except WorkerRefused as exc:
            return _refused(log, exc)
    else:
        try:
            store = TaskStore(cfg.db_url)
        except Exception as exc:  # noqa: BLE001 - database unavailable: exit 2 with the reason
            log.emit("worker_stopped", reason="database unavailable", database=redact_url(cfg.db_url),
                     error=f"{type(exc).__name__}: {exc}"[:500])
            return 2
    try:  # read by source.downloads.DownloadLimits (one home for the rule)
        private_networks_from(cfg.allow_private_urls)
    except ValueError as exc:  # a typo here must stop the worker at start, not fail every download
        log.emit("worker_stopped", reason="invalid download settings", error=str(exc)[:300])
        store.close()
        return 2
    storage = Storage.for_database(store.url, outputs_dir=cfg.output_dir, input_roots=list(cfg.input_roots))
    try:
        # Over HTTP with the service key, outputs go to the project's Storage with that key.
        key = rest[1] if rest and not is_personal_token(rest[1]) else args.supabase_key
        publishing = SupabaseStorageConfig.from_environment(args.supabase_url, key, args.storage_bucket)
        publisher = SupabaseOutputs(publishing) if publishing else None
    except Exception as exc:  # noqa: BLE001 - any misconfiguration: exit 2 with the reason
        log.emit("worker_stopped", reason="output storage misconfigured", error=f"{type(exc).__name__}: {exc}"[:500])
        store.close()
        return 2
    if args.preload_model and not preload(args.preload_model, log):
        store.close()
        return 2
    store.run(store.record_model_names, what="record model names")  # aliases for direct-SQL inserts
    worker = Worker(store, storage, config, log, publisher=publisher)
    worker.install_signal_handlers()
    webhooks = None
    if args.deliver_webhooks:
        from source.api.webhooks import start_for_worker

        webhooks = start_for_worker(store)
    try:
        return worker.run()
    except WorkerRefused as exc:  # e.g. the worker token was revoked: stop claiming, exit 2
        return _refused(log, exc)
    finally:
        if webhooks is not None:
            webhooks.stop()
        store.close()
        log.close()


def _rest_mode(args: argparse.Namespace, cfg: Settings) -> tuple[str, str] | None:
    """(URL, access token) when the worker runs over Supabase's HTTP API, else None."""
    db_type = args.db_type or cfg.db_type
    # As the seed: the access token, else the service key from the environment.
    token = args.supabase_access_token or cfg.supabase_access_token or cfg.supabase_key
    if db_type != "supabase" and not (args.supabase_access_token and not args.db):
        return None
    url = args.supabase_url or cfg.supabase_url
    if not url or not token:
        raise SystemExit(_line("error: --db-type supabase needs --supabase-url (or $SUPABASE_URL) and "
                               "--supabase-access-token (or $SUPABASE_ACCESS_TOKEN)"))
    return url, token


def _line(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def _refused(log: EventLog, exc: Exception) -> int:
    """One clear line (stderr and the log), exit code 2, never a traceback, never the key."""
    log.emit("worker_stopped", reason="refused by Supabase", error=str(exc)[:300], exit_code=2)
    return _line(f"error: {exc}")


if __name__ == "__main__":
    sys.exit(main())
