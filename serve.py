#!/usr/bin/env python3
"""The HTTP API server: `python serve.py --db URL [--host 127.0.0.1] [--port 8000] [--no-auth]`.

Apps queue tasks and follow them over HTTP (source/api/); workers (headless.py) run them from the same
database. API keys: `add_task.py keys create --project P`. --no-auth is refused unless the server
listens on loopback only.
"""

from __future__ import annotations

import argparse
import sys

from source.api.auth import LOOPBACK_HOSTS
from source.settings import DEFAULT_DB_URL, settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve.py", description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None, help=f"database URL (default $HEADLESS_DB_URL or {DEFAULT_DB_URL})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-auth", action="store_true", help="no API keys (loopback only)")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--webhook-allow-private", action="store_true",
                        help="let webhooks reach loopback/private/link-local addresses (refused by default)")
    parser.add_argument("--no-webhooks", action="store_true", help="this server does not deliver webhooks")
    parser.add_argument("--webhook-backoff-scale", type=float, default=1.0, help=argparse.SUPPRESS)  # tests
    args = parser.parse_args(argv)
    if args.no_auth and args.host not in LOOPBACK_HOSTS:
        print(f"error: --no-auth is allowed only on loopback ({', '.join(LOOPBACK_HOSTS)}), not {args.host}",
              file=sys.stderr)
        return 2
    import uvicorn

    from source.api.app import create_app

    app = create_app(args.db or settings().db_url, no_auth=args.no_auth, deliver_webhooks=not args.no_webhooks,
                     webhook_allow_private=args.webhook_allow_private,
                     webhook_backoff_scale=args.webhook_backoff_scale)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
