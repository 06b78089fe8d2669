"""A local stand-in for the Supabase Storage REST endpoints the worker uses (upload an object, read a
public object), for tests. It speaks the same HTTP as the real service for these two calls; it is not
Supabase, so the real service's own behaviour (RLS policies, quotas) is not covered by it."""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StorageStandIn:
    def __init__(self, key: str, buckets: tuple[str, ...] = ("image_uploads",)) -> None:
        self.key = key
        self.buckets = set(buckets)
        self.objects: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.uploads: list[dict] = []
        self.fail_next_uploads = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                prefix = "/storage/v1/object/"
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if not self.path.startswith(prefix):
                    return self._reply(404, b'{"error":"not found"}')
                bucket, _, name = self.path[len(prefix):].partition("/")
                if self.headers.get("Authorization") != f"Bearer {stand_in.key}" or \
                        self.headers.get("apikey") != stand_in.key:
                    return self._reply(401, json.dumps({"statusCode": "401", "error": "Unauthorized",
                                                        "message": "Invalid JWT"}).encode())
                if bucket not in stand_in.buckets:
                    return self._reply(400, json.dumps({"statusCode": "404", "error": "Bucket not found",
                                                        "message": "Bucket not found"}).encode())
                if stand_in.fail_next_uploads:
                    stand_in.fail_next_uploads -= 1
                    return self._reply(503, json.dumps({"statusCode": "503", "error": "Unavailable",
                                                        "message": "try again"}).encode())
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
                part = next(p for p in message.iter_parts() if p.get_param("name", header="content-disposition") == "file")
                data = part.get_payload(decode=True)
                existed = (bucket, name) in stand_in.objects
                if existed and self.headers.get("x-upsert") != "true":
                    return self._reply(400, json.dumps({"statusCode": "409", "error": "Duplicate",
                                                        "message": "The resource already exists"}).encode())
                stand_in.objects[(bucket, name)] = (data, part.get_content_type())
                stand_in.uploads.append({"bucket": bucket, "name": name, "bytes": len(data),
                                         "content_type": part.get_content_type(),
                                         "upsert": self.headers.get("x-upsert")})
                self._reply(200, json.dumps({"Key": f"{bucket}/{name}", "Id": name}).encode())

            def do_GET(self):
                if self.path.startswith("/storage/v1/bucket/"):  # bucket details: public, as the seed's
                    bucket = self.path[len("/storage/v1/bucket/"):]
                    if bucket not in stand_in.buckets:
                        return self._reply(400, json.dumps({"statusCode": "404", "error": "Bucket not found",
                                                            "message": "Bucket not found"}).encode())
                    return self._reply(200, json.dumps({
                        "id": bucket, "name": bucket, "owner": "", "public": True, "file_size_limit": None,
                        "allowed_mime_types": None, "created_at": "2026-01-01T00:00:00Z",
                        "updated_at": "2026-01-01T00:00:00Z"}).encode())
                prefix = "/storage/v1/object/public/"
                if not self.path.startswith(prefix):
                    return self._reply(404, b'{"error":"not found"}')
                bucket, _, name = self.path[len(prefix):].partition("/")
                found = stand_in.objects.get((bucket, name))
                if found is None:
                    return self._reply(404, b'{"error":"not found"}')
                self._reply(200, found[0], found[1])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
