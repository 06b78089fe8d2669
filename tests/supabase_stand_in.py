#!/usr/bin/env python3
"""A local stand-in for the HTTP side of a Supabase project (PostgREST and Storage), for offline tests.

    python tests/supabase_stand_in.py --db PG_URL --port N --jwt-secret S --storage-dir DIR

The database is a real PostgreSQL prepared with supabase/tests/supabase_base.sql and the repo's
migrations. Each request's JWT (Authorization: Bearer, else the apikey header) is verified with the
project's secret (HS256, as Supabase's legacy keys); then every PostgREST call runs in one transaction
as the JWT's role with `request.jwt.claims` set, exactly as PostgREST does it, so RLS, grants and the
SECURITY DEFINER functions make every decision. The stand-in adds no permission logic of its own:
Storage reads and writes go through `storage.objects` as the caller too (a bucket's `public` flag,
the table's policies), and only the object bytes live on disk.

Supported: table GET (select=, column=op.value filters with eq/neq/gt/gte/lt/lte/is/in, order, limit,
offset), POST (insert; Prefer: return=representation, resolution=ignore-duplicates|merge-duplicates with
on_conflict=), PATCH and DELETE with filters; POST /rest/v1/rpc/<function>; Storage upload (POST/PUT,
multipart, x-upsert), authenticated download (also /object/authenticated/), public download, signed URLs
(create and fetch), bucket details.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import jwt
import psycopg
from psycopg import sql

API_ROLES = ("anon", "authenticated", "service_role")
OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "like": "LIKE",
             "ilike": "ILIKE"}
# Reserved query keys of PostgREST (everything else is a column filter).
RESERVED = {"select", "order", "limit", "offset", "on_conflict", "columns"}


class HttpError(Exception):
    def __init__(self, status: int, body: dict) -> None:
        super().__init__(body.get("message"))
        self.status, self.body = status, body


def postgrest_status(sqlstate: str | None, role: str) -> int:
    """PostgREST's mapping of SQLSTATE classes to HTTP statuses (the parts that matter here)."""
    state = sqlstate or ""
    if state == "42501":
        return 401 if role == "anon" else 403
    if state.startswith("28"):
        return 403
    if state in ("23505", "23503"):
        return 409
    if state in ("42883", "42P01", "P0002"):
        return 404
    if state.startswith(("22", "23", "P0", "42")):
        return 400
    return 500


class StandIn:
    def __init__(self, db_url: str, jwt_secret: str, storage_dir: Path) -> None:
        self.db_url = db_url
        self.jwt_secret = jwt_secret
        self.storage_dir = Path(storage_dir)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()

    # ------------------------------------------------------------------ database
    def connection(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self.db_url)
            self._local.conn = conn
        return conn

    def run(self, claims: dict, fn):
        """fn(cursor) inside one transaction as the JWT's role with request.jwt.claims set."""
        conn = self.connection()
        role = claims["role"]
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
                cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                return fn(cur)
        except psycopg.Error as exc:
            diag = exc.diag
            raise HttpError(postgrest_status(exc.sqlstate, role),
                            {"code": exc.sqlstate, "message": diag.message_primary or str(exc),
                             "details": diag.message_detail, "hint": diag.message_hint}) from None

    # ------------------------------------------------------------------ JWT
    def claims_of(self, headers) -> dict:
        auth = headers.get("Authorization") or ""
        token = auth[7:] if auth.lower().startswith("bearer ") else headers.get("apikey")
        if not token:
            raise HttpError(401, {"code": "PGRST301", "message": "No API key found in request"})
        try:
            claims = jwt.decode(token, self.jwt_secret, algorithms=["HS256"], options={"verify_aud": False})
        except jwt.PyJWTError as exc:
            raise HttpError(401, {"code": "PGRST301", "message": f"Invalid JWT: {type(exc).__name__}"}) from None
        if claims.get("role") not in API_ROLES:
            raise HttpError(401, {"code": "PGRST301", "message": "JWT role is not an API role"})
        return claims

    def sign(self, payload: dict) -> str:
        return jwt.encode(payload, self.jwt_secret, algorithm="HS256")

    # ------------------------------------------------------------------ PostgREST
    @staticmethod
    def _filters(query: list[tuple[str, str]]) -> tuple[sql.Composable, list]:
        parts, params = [], []
        for key, value in query:
            if key in RESERVED:
                continue
            op, _, operand = value.partition(".")
            column = sql.Identifier(key)
            if op == "is":
                word = {"null": "NULL", "true": "TRUE", "false": "FALSE"}.get(operand.lower())
                if word is None:
                    raise HttpError(400, {"code": "PGRST100", "message": f"bad is. value {operand!r}"})
                parts.append(sql.SQL("{} IS " + word).format(column))
            elif op == "in":
                items = [v.strip().strip('"') for v in operand.strip("()").split(",") if v.strip()]
                parts.append(sql.SQL("{}::text = ANY(%s)").format(column))
                params.append(items)
            elif op in OPERATORS:
                parts.append(sql.SQL("{}::text " + OPERATORS[op] + " %s").format(column)
                             if op in ("eq", "neq") else sql.SQL("{} " + OPERATORS[op] + " %s").format(column))
                params.append(operand)
            else:
                raise HttpError(400, {"code": "PGRST100", "message": f"unsupported filter operator {op!r}"})
        where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts) if parts else sql.SQL("")
        return where, params

    @staticmethod
    def _columns(select: str | None) -> sql.Composable:
        if not select or select.strip() == "*":
            return sql.SQL("*")
        return sql.SQL(", ").join(sql.Identifier(c.strip()) for c in select.split(",") if c.strip())

    def table_get(self, claims, table, query):
        q = dict(query)
        where, params = self._filters(query)
        statement = sql.SQL("SELECT coalesce(jsonb_agg(to_jsonb(r)), '[]'::jsonb) FROM (SELECT {} FROM {}{}").format(
            self._columns(q.get("select")), sql.Identifier(table), where)
        if q.get("order"):
            keys = []
            for item in q["order"].split(","):
                column, _, direction = item.partition(".")
                keys.append(sql.SQL("{} " + ("DESC" if direction.startswith("desc") else "ASC"))
                            .format(sql.Identifier(column)))
            statement += sql.SQL(" ORDER BY ") + sql.SQL(", ").join(keys)
        if q.get("limit"):
            statement += sql.SQL(" LIMIT {}").format(sql.Literal(int(q["limit"])))
        if q.get("offset"):
            statement += sql.SQL(" OFFSET {}").format(sql.Literal(int(q["offset"])))
        statement += sql.SQL(") r")
        return self.run(claims, lambda cur: cur.execute(statement, params).fetchone()[0])

    def table_insert(self, claims, table, query, body, prefer):
        rows = body if isinstance(body, list) else [body]
        if not rows:
            return []
        names = list(dict.fromkeys(k for row in rows for k in row))
        cols = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        statement = sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM jsonb_populate_recordset(NULL::{t}, %s::jsonb)"
                            ).format(t=sql.Identifier(table), c=cols)
        q = dict(query)
        if q.get("on_conflict") and "resolution=" in prefer:
            target = sql.SQL(", ").join(sql.Identifier(c.strip()) for c in q["on_conflict"].split(","))
            if "ignore-duplicates" in prefer:
                statement += sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(target)
            else:
                updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in names)
                statement += sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(target, updates)
        return self._write(claims, statement, [json.dumps(rows)], prefer)

    def table_update(self, claims, table, query, body, prefer):
        where, params = self._filters(query)
        sets = sql.SQL(", ").join(
            sql.SQL("{0} = (jsonb_populate_record(NULL::{1}, %s::jsonb)).{0}").format(sql.Identifier(n),
                                                                                   sql.Identifier(table))
            for n in body)
        statement = sql.SQL("UPDATE {} SET {}{}").format(sql.Identifier(table), sets, where)
        return self._write(claims, statement, [json.dumps(body)] * len(body) + params, prefer)

    def table_delete(self, claims, table, query, prefer):
        where, params = self._filters(query)
        return self._write(claims, sql.SQL("DELETE FROM {}{}").format(sql.Identifier(table), where), params, prefer)

    def _write(self, claims, statement, params, prefer):
        if "return=representation" in prefer:
            statement = sql.SQL("WITH w AS ({} RETURNING *) SELECT coalesce(jsonb_agg(to_jsonb(w)), '[]'::jsonb)"
                                " FROM w").format(statement)
            return self.run(claims, lambda cur: cur.execute(statement, params).fetchone()[0])
        self.run(claims, lambda cur: cur.execute(statement, params))
        return None

    def rpc(self, claims, name, args: dict):
        def call(cur):
            cur.execute("SELECT p.proargnames, p.proargmodes::text[], p.proargtypes::regtype[]::text[], p.proretset"
                        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                        " WHERE n.nspname = 'public' AND p.proname = %s", (name,))
            found = cur.fetchall()
            if len(found) != 1:
                raise psycopg.errors.UndefinedFunction(f"Could not find the function public.{name}")
            names, modes, types, retset = found[0]
            in_names = [n for n, m in zip(names or [], modes or ["i"] * len(names or [])) if m in ("i", "b", "v")]
            arg_types = dict(zip(in_names, types))
            unknown = set(args) - set(arg_types)
            if unknown:
                raise psycopg.errors.UndefinedFunction(
                    f"Could not find the function public.{name}({', '.join(sorted(args))})")
            parts, params = [], []
            for key, value in args.items():
                kind = arg_types[key]
                parts.append(sql.SQL("{} => %s::" + kind).format(sql.Identifier(key)))
                if value is None:
                    params.append(None)
                elif kind in ("json", "jsonb"):
                    params.append(json.dumps(value))
                elif kind.endswith("[]"):
                    params.append([None if v is None else str(v) for v in value])
                elif isinstance(value, bool):
                    params.append("true" if value else "false")
                else:
                    params.append(str(value))
            call_sql = sql.SQL("{}({})").format(sql.Identifier(name), sql.SQL(", ").join(parts))
            if retset:
                statement = sql.SQL("SELECT coalesce(jsonb_agg(to_jsonb(r)), '[]'::jsonb) FROM {} r").format(call_sql)
            else:
                statement = sql.SQL("SELECT to_jsonb({})").format(call_sql)
            return cur.execute(statement, params).fetchone()[0]

        return self.run(claims, call)

    # ------------------------------------------------------------------ Storage
    def object_path(self, bucket: str, name: str) -> Path:
        parts = [bucket, *name.split("/")]
        if any(p in ("", ".", "..") or "\\" in p for p in parts):
            raise HttpError(400, {"statusCode": "400", "error": "InvalidKey", "message": "Invalid key"})
        return self.storage_dir.joinpath(*parts)

    def upload(self, claims, bucket, name, data: bytes, content_type: str, upsert: bool):
        path = self.object_path(bucket, name)
        owner = claims.get("sub")

        def record(cur):
            conflict = ("ON CONFLICT (bucket_id, name) DO UPDATE SET updated_at = now(), metadata = EXCLUDED.metadata"
                        if upsert else "")
            cur.execute("INSERT INTO storage.objects (bucket_id, name, owner, metadata) VALUES (%s, %s, %s, %s) "
                        + conflict, (bucket, name, owner, json.dumps({"mimetype": content_type, "size": len(data)})))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            tmp.replace(path)  # inside the transaction: a refused row leaves no file

        try:
            self.run(claims, record)
        except HttpError as exc:
            code = exc.body.get("code")
            if code == "23505":
                raise HttpError(400, {"statusCode": "409", "error": "Duplicate",
                                      "message": "The resource already exists"}) from None
            if code == "23503":
                raise HttpError(400, {"statusCode": "404", "error": "Bucket not found",
                                      "message": "Bucket not found"}) from None
            raise HttpError(400, {"statusCode": "403", "error": "Unauthorized",
                                  "message": "new row violates row-level security policy"}) from None
        return {"Key": f"{bucket}/{name}", "Id": name}

    def visible(self, claims, bucket, name) -> str | None:
        """The object's content type when the caller may read it (RLS on storage.objects decides)."""
        def look(cur):
            row = cur.execute("SELECT metadata->>'mimetype' FROM storage.objects WHERE bucket_id = %s AND name = %s",
                              (bucket, name)).fetchone()
            return None if row is None else (row[0] or "application/octet-stream")
        return self.run(claims, look)

    def bucket(self, claims, bucket_id) -> dict | None:
        def look(cur):  # storage.buckets has RLS and no policy: the service role sees them, as in Supabase
            row = cur.execute("SELECT to_jsonb(b) FROM storage.buckets b WHERE id = %s", (bucket_id,)).fetchone()
            return None if row is None else {**row[0], "owner": row[0].get("owner") or ""}
        return self.run(claims, look)

    def public_object(self, bucket, name) -> str | None:
        def look(cur):  # a public bucket's objects need no policy: read as the service role, as Storage does
            row = cur.execute("SELECT o.metadata->>'mimetype' FROM storage.objects o JOIN storage.buckets b"
                              " ON b.id = o.bucket_id WHERE b.public AND o.bucket_id = %s AND o.name = %s",
                              (bucket, name)).fetchone()
            return None if row is None else (row[0] or "application/octet-stream")
        return self.run({"role": "service_role"}, look)


def make_handler(stand_in: StandIn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet: request lines carry tokens in signed URLs
            pass

        def _reply(self, status: int, body, content_type: str = "application/json") -> None:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _dispatch(self, method: str) -> None:
            try:
                raw = self._body() if method in ("POST", "PATCH", "PUT") else b""
                parts = urlsplit(self.path)
                path, query = parts.path, parse_qsl(parts.query, keep_blank_values=True)
                if path.startswith("/rest/v1/"):
                    return self._rest(method, path[len("/rest/v1/"):], query, raw)
                if path.startswith("/storage/v1/"):
                    return self._storage(method, path[len("/storage/v1/"):], query, raw)
                raise HttpError(404, {"message": "not found"})
            except HttpError as exc:
                body = exc.body
                if self.path.startswith("/rest/v1/"):  # PostgREST's error object always has all four
                    body = {"code": None, "message": None, "details": None, "hint": None, **body}
                self._reply(exc.status, body)

        def _rest(self, method, rest, query, raw):
            claims = stand_in.claims_of(self.headers)
            prefer = self.headers.get("Prefer") or ""
            body = json.loads(raw) if raw else {}
            if rest.startswith("rpc/") and method == "POST":
                return self._reply(200, stand_in.rpc(claims, rest[4:], body))
            table = unquote(rest)
            if method == "GET":
                return self._reply(200, stand_in.table_get(claims, table, query))
            if method == "POST":
                result = stand_in.table_insert(claims, table, query, body, prefer)
            elif method == "PATCH":
                result = stand_in.table_update(claims, table, query, body, prefer)
            elif method == "DELETE":
                result = stand_in.table_delete(claims, table, query, prefer)
            else:
                raise HttpError(405, {"message": "method not allowed"})
            return self._reply(201 if method == "POST" else 200, result if result is not None else b"")

        def _storage(self, method, rest, query, raw):
            if rest.startswith("object/public/") and method == "GET":
                bucket, _, name = unquote(rest[len("object/public/"):]).partition("/")
                kind = stand_in.public_object(bucket, name)
                if kind is None:
                    raise HttpError(400, {"statusCode": "404", "error": "not_found", "message": "Object not found"})
                return self._reply(200, stand_in.object_path(bucket, name).read_bytes(), kind)
            if rest.startswith("object/sign/") and method == "GET":
                bucket, _, name = unquote(rest[len("object/sign/"):]).partition("/")
                try:
                    signed = jwt.decode(dict(query).get("token", ""), stand_in.jwt_secret, algorithms=["HS256"])
                except jwt.PyJWTError:
                    raise HttpError(400, {"statusCode": "400", "error": "InvalidJWT",
                                          "message": "invalid signature or expired"}) from None
                if signed.get("url") != f"{bucket}/{name}":
                    raise HttpError(400, {"statusCode": "400", "error": "InvalidJWT", "message": "wrong object"})
                return self._reply(200, stand_in.object_path(bucket, name).read_bytes(), "application/octet-stream")
            claims = stand_in.claims_of(self.headers)
            if rest.startswith("object/sign/") and method == "POST":
                bucket, _, name = unquote(rest[len("object/sign/"):]).partition("/")
                if stand_in.visible(claims, bucket, name) is None:
                    raise HttpError(400, {"statusCode": "404", "error": "not_found", "message": "Object not found"})
                expires = int(json.loads(raw or b"{}").get("expiresIn") or 60)
                token = stand_in.sign({"url": f"{bucket}/{name}", "exp": int(time.time()) + expires})
                return self._reply(200, {"signedURL": f"/object/sign/{quote(bucket)}/{quote(name)}?token={token}"})
            if rest.startswith("object/") and method in ("POST", "PUT"):
                bucket, _, name = unquote(rest[len("object/"):]).partition("/")
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + (self.headers.get("Content-Type") or "").encode() + b"\r\n\r\n" + raw)
                if message.is_multipart():
                    part = next(p for p in message.iter_parts()
                                if p.get_param("name", header="content-disposition") == "file")
                    data, kind = part.get_payload(decode=True), part.get_content_type()
                else:
                    data, kind = raw, self.headers.get("Content-Type") or "application/octet-stream"
                upsert = method == "PUT" or self.headers.get("x-upsert") == "true"
                return self._reply(200, stand_in.upload(claims, bucket, name, data, kind, upsert))
            if rest.startswith("bucket/") and method == "GET":
                found = stand_in.bucket(claims, unquote(rest[len("bucket/"):]))
                if found is None:
                    raise HttpError(400, {"statusCode": "404", "error": "Bucket not found",
                                          "message": "Bucket not found"})
                return self._reply(200, found)
            if rest.startswith("object/") and method == "GET":
                rest = rest.replace("object/authenticated/", "object/", 1)  # the same read, named explicitly
                bucket, _, name = unquote(rest[len("object/"):]).partition("/")
                kind = stand_in.visible(claims, bucket, name)
                if kind is None:
                    raise HttpError(400, {"statusCode": "404", "error": "not_found", "message": "Object not found"})
                return self._reply(200, stand_in.object_path(bucket, name).read_bytes(), kind)
            raise HttpError(404, {"statusCode": "404", "error": "not_found", "message": "not found"})

        def do_GET(self):
            self._dispatch("GET")

        def do_POST(self):
            self._dispatch("POST")

        def do_PATCH(self):
            self._dispatch("PATCH")

        def do_PUT(self):
            self._dispatch("PUT")

        def do_DELETE(self):
            self._dispatch("DELETE")

    return Handler


def serve(db_url: str, port: int, jwt_secret: str, storage_dir: Path) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(StandIn(db_url, jwt_secret, storage_dir)))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", required=True, help="PostgreSQL URL of the prepared database")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jwt-secret", required=True)
    p.add_argument("--storage-dir", type=Path, required=True)
    args = p.parse_args(argv)
    server = serve(args.db, args.port, args.jwt_secret, args.storage_dir)
    print(f"supabase stand-in listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
