"""Downloads of untrusted URLs against a real local HTTP server: address policy (default and opt-in), every
redirect hop checked, the deadline enforced on a dripping socket, short bodies refused and never cached."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from source import settings
from source.downloads import DownloadLimits, download_to_cache, private_networks_from
from source.task_context import InvalidInput, TaskCancelled, TransientError

BODY = bytes(range(256)) * 40  # 10240 bytes


class Server:
    """Routes: /ok (BODY), /redirect?to=URL (302), /drip (declares 1000 bytes, sends one per 0.1 s),
    /short (declares len(BODY), sends half, then hangs up; whole after `heal()`), /missing (404)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.healed = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                path, _, query = self.path.partition("?")
                if path == "/ok":
                    self._send(200, BODY)
                elif path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", query.removeprefix("to="))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path == "/loop":
                    self.send_response(302)
                    self.send_header("Location", "/loop")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path == "/drip":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    try:
                        for _ in range(1000):
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.1)
                    except OSError:
                        pass
                elif path == "/short":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(BODY)))
                    self.end_headers()
                    self.wfile.write(BODY if server.healed else BODY[: len(BODY) // 2])
                    self.close_connection = True
                else:
                    self._send(404, b"no")

            def _send(self, status, body):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


LOCAL = DownloadLimits(private_networks=private_networks_from("127.0.0.1"), timeout_s=20)


def test_opted_in_download_follows_redirects_and_caches(server, tmp_path):
    got = download_to_cache(f"{server.url}/redirect?to=/ok", tmp_path, LOCAL)
    assert got.read_bytes() == BODY
    assert server.requests == ["/redirect?to=/ok", "/ok"]
    assert download_to_cache(f"{server.url}/redirect?to=/ok", tmp_path, LOCAL) == got  # cached: no new request
    assert len(server.requests) == 2


def test_default_refuses_loopback_private_and_link_local(server, tmp_path, monkeypatch):
    monkeypatch.delenv("HEADLESS_ALLOW_PRIVATE_URLS", raising=False)
    limits = DownloadLimits()
    for url in (f"{server.url}/ok", "http://localhost:9/x", "http://10.1.2.3/x", "http://192.168.0.10/x",
                "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/x", "http://[::ffff:127.0.0.1]/x",
                "http://0.0.0.0/x", "http://100.64.0.1/x"):
        with pytest.raises(InvalidInput, match="loopback, private or link-local"):
            download_to_cache(url, tmp_path, limits)
    assert server.requests == []  # refused before any connection
    monkeypatch.setenv("HEADLESS_ALLOW_PRIVATE_URLS", "1")  # the operator's opt-in (what --allow-private-urls sets)
    settings.reset()  # settings are read once per process: read the changed environment again
    assert download_to_cache(f"{server.url}/ok", tmp_path, DownloadLimits()).read_bytes() == BODY


def test_redirect_to_a_private_address_is_refused(server, tmp_path):
    # Only the test server's own address is allowed: a hop onward to the metadata address or the LAN is not.
    for target in ("http://169.254.169.254/latest/meta-data/iam/", "http://10.0.0.7/secret", "http://[::1]:1/"):
        with pytest.raises(InvalidInput, match="loopback, private or link-local"):
            download_to_cache(f"{server.url}/redirect?to={target}", tmp_path, LOCAL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target", ["ftp://example.com/file.mp4", "file:///etc/passwd", "gopher://x/"])
def test_redirect_to_another_scheme_is_invalid_input_not_transient(server, tmp_path, target):
    with pytest.raises(InvalidInput, match="scheme") as info:
        download_to_cache(f"{server.url}/redirect?to={target}", tmp_path, LOCAL)
    assert not isinstance(info.value, TransientError)
    assert server.requests == [f"/redirect?to={target}"]


def test_redirect_loops_end(server, tmp_path):
    with pytest.raises(InvalidInput, match="redirects"):
        download_to_cache(f"{server.url}/loop", tmp_path, LOCAL)


def test_a_dripping_server_is_cut_off_at_the_deadline(server, tmp_path):
    limits = DownloadLimits(private_networks=LOCAL.private_networks, timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(TransientError, match="took longer than 1 s"):
        download_to_cache(f"{server.url}/drip", tmp_path, limits)
    assert time.monotonic() - started < 2.0  # the body would take 100 s
    assert list(tmp_path.iterdir()) == []


def test_the_tasks_own_stop_check_interrupts_a_download(server, tmp_path):
    started = time.monotonic()
    with pytest.raises(TaskCancelled):
        download_to_cache(f"{server.url}/drip", tmp_path, LOCAL, should_stop=lambda: time.monotonic() - started > 0.5)
    assert time.monotonic() - started < 1.5


def test_a_short_body_is_refused_and_not_cached(server, tmp_path):
    with pytest.raises(TransientError, match=f"sent {len(BODY) // 2} of its declared {len(BODY)} bytes"):
        download_to_cache(f"{server.url}/short", tmp_path, LOCAL)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a partial one
    server.healed = True  # the retry gets the whole body
    assert download_to_cache(f"{server.url}/short", tmp_path, LOCAL).read_bytes() == BODY


def test_errors_mask_query_secrets_and_stay_short(server, tmp_path):
    url = f"{server.url}/missing?X-Amz-Signature=deadbeef&token=s3cr3t&page={'p' * 5000}"
    with pytest.raises(InvalidInput, match="HTTP 404") as info:
        download_to_cache(url, tmp_path, LOCAL)
    message = str(info.value)
    assert "deadbeef" not in message and "s3cr3t" not in message and "X-Amz-Signature=***" in message
    assert len(message) < 400


def test_oversized_bodies_and_bad_settings(server, tmp_path):
    with pytest.raises(InvalidInput, match="byte"):
        download_to_cache(f"{server.url}/ok", tmp_path, DownloadLimits(max_bytes=100,
                                                                      private_networks=LOCAL.private_networks))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="HEADLESS_ALLOW_PRIVATE_URLS"):
        private_networks_from("192.168.1.0/33")


def test_a_worker_refuses_the_metadata_address_masks_tokens_and_its_time_limit_stops_a_drip(server, sqlite_url,
                                                                                           tmp_path):
    """Through a real headless.py: only the operator's network (127.0.0.1 here) is allowed, so the metadata
    address fails at once as bad input; the task's own 2 s limit interrupts a 100 s drip; no token reaches
    the log or the rows."""
    from source.store.task_store import TaskStore
    from tests.worker_process import WorkerProcess

    store = TaskStore(sqlite_url)
    metadata = store.add_task("extract_frame", {
        "input_video_path": "http://169.254.169.254/latest/meta-data/v.mp4?token=TOKEN-ONE"})
    drip = store.add_task("extract_frame", {"input_video_path": f"{server.url}/drip?X-Amz-Signature=TOKEN-TWO"},
                          timeout_seconds=2, max_attempts=1)
    started = time.monotonic()
    worker = WorkerProcess(sqlite_url, tmp_path / "logs", "--poll-interval", "0.2", "--exit-when-idle",
                           worker_id="dl", env={"HEADLESS_ALLOW_PRIVATE_URLS": "127.0.0.1",
                                                "HEADLESS_DOWNLOAD_TIMEOUT_S": "100"})
    try:
        assert worker.wait(60) == 0, worker.stderr_tail()
    finally:
        worker.stop()
    assert time.monotonic() - started < 30  # not the drip's 100 s
    first, second = store.get(metadata), store.get(drip)
    assert first["status"] == "Failed" and first["attempts"] == 1, first  # bad input: not retried
    assert "loopback, private or link-local" in first["error_message"]
    assert second["status"] == "Failed" and "time limit" in second["error_message"], second
    assert any(r.startswith("/drip") for r in server.requests)
    text = (worker.log_file.read_text() + worker.stderr_path.read_text() + first["error_message"]
            + second["error_message"])  # the params keep the URL as given; everything derived masks it
    assert "TOKEN-ONE" not in text and "TOKEN-TWO" not in text
    assert "meta-data/v.mp4?token=***" in first["error_message"]


def test_the_event_log_masks_url_secrets_in_every_field(tmp_path):
    import io
    import json

    from source.event_log import EventLog

    stream = io.StringIO()
    log = EventLog("w1", tmp_path, stream=stream)
    log.emit("task_error", error="GET https://b.s3.amazonaws.com/k.mp4?X-Amz-Credential=AKIAX&X-Amz-Signature=abc12"
                                 "&X-Amz-Security-Token=sess9&response-content-type=video/mp4 failed",
             nested={"urls": ["https://x.blob.core.windows.net/c/b.png?sv=2024&sig=azsig%3D&se=2030",
                              "postgresql://user:pgpass@db/x?sslpassword=sslpw&application_name=w",
                              "https://api.example.com/v1?api_key=k3y&access_token=t0k&page=2#top"]},
             plain="no url here: token=visible-by-design")
    log.close()
    line = (tmp_path / "worker-w1.jsonl").read_text()
    assert line == stream.getvalue()
    for secret in ("AKIAX", "abc12", "sess9", "azsig", "pgpass", "sslpw", "k3y", "t0k"):
        assert secret not in line, secret
    record = json.loads(line)
    assert "response-content-type=video/mp4" in record["error"]  # harmless parameters stay readable
    assert record["nested"]["urls"][0] == "https://x.blob.core.windows.net/c/b.png?sv=2024&sig=***&se=2030"
    assert record["nested"]["urls"][2] == "https://api.example.com/v1?api_key=***&access_token=***&page=2#top"
    assert record["plain"] == "no url here: token=visible-by-design"


def _self_signed(tmp_path, name: str):
    """A certificate for `name` only (and its key), as files: the test's own trust root."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_https_connects_to_the_checked_address_and_verifies_the_name(server, tmp_path, monkeypatch):
    import ssl

    cert_file, key_file = _self_signed(tmp_path, "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    port = server.httpd.server_address[1]
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # OpenSSL's default trust store for this process
    limits = DownloadLimits(private_networks=private_networks_from("127.0.0.1,::1"), timeout_s=20)
    # localhost may also resolve to ::1, where nothing listens: the next checked address is tried
    got = download_to_cache(f"https://localhost:{port}/redirect?to=/ok", tmp_path / "cache", limits)
    assert got.read_bytes() == BODY
    # the certificate names localhost, not 127.0.0.1: verification is by the URL's host name
    with pytest.raises(TransientError, match="SSL"):
        download_to_cache(f"https://127.0.0.1:{port}/ok", tmp_path / "cache", limits)


def test_a_silent_tls_server_is_cut_off_at_the_deadline(tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts TCP, never answers the TLS hello
        limits = DownloadLimits(private_networks=LOCAL.private_networks, timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(TransientError, match="took longer than 1 s"):
            download_to_cache(f"https://127.0.0.1:{listener.getsockname()[1]}/x", tmp_path, limits)
        assert time.monotonic() - started < 2.0


def test_spaces_and_unicode_in_a_url_are_encoded_not_fatal(server, tmp_path):
    with pytest.raises(InvalidInput, match="HTTP 404"):
        download_to_cache(f"{server.url}/my file é.png?q=a b", tmp_path, LOCAL)
    assert server.requests[-1] == "/my%20file%20%C3%A9.png?q=a%20b"
    with pytest.raises(InvalidInput, match="HTTP 404"):
        download_to_cache(f"{server.url}/a%2Fb?x=%26", tmp_path, LOCAL)
    assert server.requests[-1] == "/a%2Fb?x=%26"  # escapes already there are sent as they are


def test_a_malformed_network_list_stops_the_worker_at_start(sqlite_url, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from tests.worker_process import REPO

    env = {**os.environ, "HEADLESS_ALLOW_PRIVATE_URLS": "192.168.1.0/33"}
    proc = subprocess.run([sys.executable, str(REPO / "headless.py"), "--db", sqlite_url, "--exit-when-idle"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = json.loads(proc.stderr.strip().splitlines()[-1])
    assert last["event"] == "worker_stopped" and "HEADLESS_ALLOW_PRIVATE_URLS" in last["error"]
