"""A whole local 'Supabase project' for tests: a migrated database in the session's PostgreSQL cluster
and tests/supabase_stand_in.py serving it over HTTP as its own process, with keys signed by its secret."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import psycopg

from tests.supabase_db import apply_supabase

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SupabaseProject:
    db_url: str
    url: str
    secret: str
    process: subprocess.Popen
    storage_dir: Path
    users: dict[str, str] = field(default_factory=dict)

    def key(self, role: str, sub: str | None = None, expires_in: float = 3600) -> str:
        payload = {"role": role, "iss": "supabase", "iat": int(time.time()), "exp": int(time.time() + expires_in)}
        if sub:
            payload["sub"] = sub
        return jwt.encode(payload, self.secret, algorithm="HS256")

    @property
    def service_key(self) -> str:
        return self.key("service_role")

    @property
    def anon_key(self) -> str:
        return self.key("anon")

    def add_user(self, name: str, projects: list[str]) -> str:
        user = str(uuid.uuid4())
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute("INSERT INTO auth.users (id, email) VALUES (%s, %s)", (user, f"{name}@example.com"))
            for project in projects:
                conn.execute("INSERT INTO projects (id, user_id) VALUES (%s, %s)", (project, user))
        self.users[name] = user
        return user

    def client(self, key: str, user_jwt: str | None = None):
        from supabase import ClientOptions, create_client

        headers = {"Authorization": f"Bearer {user_jwt}"} if user_jwt else {}
        return create_client(self.url, key, options=ClientOptions(headers=headers, auto_refresh_token=False,
                                                                  persist_session=False))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_project(db_url: str, storage_dir: Path, *, migrations: bool = True) -> SupabaseProject:
    apply_supabase(db_url, migrations=migrations)
    port, secret = _free_port(), "test-secret-" + uuid.uuid4().hex
    process = subprocess.Popen([sys.executable, str(REPO / "tests" / "supabase_stand_in.py"), "--db", db_url,
                                "--port", str(port), "--jwt-secret", secret, "--storage-dir", str(storage_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = process.stdout.readline()
    if "listening" not in line:
        process.kill()
        raise RuntimeError(f"stand-in did not start: {line}{process.stdout.read()}")
    return SupabaseProject(db_url=db_url, url=f"http://127.0.0.1:{port}", secret=secret, process=process,
                           storage_dir=storage_dir)
