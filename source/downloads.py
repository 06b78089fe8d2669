"""Bounded downloads of untrusted URLs into a cache named by the URL's hash.

Every hop (the first URL and each redirect) is checked before anything is sent to it: the scheme must be
allowed (http/https), the host must be in the allow-list when there is one, and unless the operator allows
it (`--allow-private-urls` / HEADLESS_ALLOW_PRIVATE_URLS=1, or a list of networks, for a LAN file server)
every address the host resolves to must be a public one: loopback, private, link-local (the cloud
metadata address 169.254.169.254), shared, reserved and multicast targets are refused. The connection then
goes to the address that was checked, so a second DNS answer cannot swap in a private one. Proxy variables are
therefore not used here.

The time limit is a deadline on the whole attempt, enforced on the socket: reads return as soon as any bytes
arrive, and a watchdog shuts the socket down when the deadline passes or the task is cancelled (its own time
limit included), so a server dripping bytes cannot hold a worker. A body shorter or longer than its declared
Content-Length is refused and never cached.

Errors say what happens next: a refused or malformed URL, a 4xx answer or an oversized body is InvalidInput
(retrying cannot help); network trouble, 5xx answers, truncated bodies and timeouts are TransientError.
URLs in messages have their secrets masked (source.event_log.mask_url) and are shortened.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from source.errors import InvalidInput, TaskCancelled, TransientError
from source.event_log import mask_url
from source.settings import settings

_REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
_CHUNK = 1 << 20
_WATCH_INTERVAL_S = 0.1
_URL_SAFE = "/%:@!$&'()*+,;=[]"  # already meaningful in a path or query: left as they are
_CONNECT_TIMEOUT_S = 30.0  # per blocking socket call; the watchdog holds the overall deadline


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_EVERY_NETWORK = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def private_networks_from(value: str | None) -> tuple[Network, ...]:
    """The non-public networks downloads may reach, from HEADLESS_ALLOW_PRIVATE_URLS: "1" (or true/yes/on)
    means all of them; a comma-separated list of addresses or CIDR blocks (`192.168.1.0/24,10.0.0.5`) means
    only those (a LAN file server without opening the cloud metadata address); empty means none."""
    text = (value or "").strip()
    if not text or text.lower() in ("0", "false", "no", "off"):
        return ()
    if text.lower() in ("1", "true", "yes", "on"):
        return _EVERY_NETWORK
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"HEADLESS_ALLOW_PRIVATE_URLS: {exc}") from None


@dataclass(frozen=True)
class DownloadLimits:
    """What a download may do. Defaults come from the environment when the limits are made (see README)."""

    schemes: tuple[str, ...] = ("https", "http")
    max_bytes: int = field(default_factory=lambda: settings().max_download_bytes)
    timeout_s: float = field(default_factory=lambda: settings().download_timeout_s)
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)  # empty: any host
    # Non-public networks that may be fetched from (see private_networks_from); empty: none.
    private_networks: tuple[Network, ...] = field(
        default_factory=lambda: private_networks_from(settings().allow_private_urls))


def is_url(ref: str) -> bool:
    return "://" in ref[:16]


def _shown(url: str) -> str:
    """A URL fit for an error message: secrets masked, at most 200 characters."""
    masked = mask_url(url)
    return masked if len(masked) <= 200 else masked[:197] + "..."


def _suffix_of(url: str) -> str:
    suffix = Path(urllib.parse.urlparse(url).path).suffix.lower()
    return suffix if suffix.isascii() and len(suffix) <= 10 and suffix[1:].isalnum() else ""


def _may_connect(address: str, limits: DownloadLimits) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback in disguise
    if ip.is_global and not ip.is_multicast:
        return True
    return any(ip.version == net.version and ip in net for net in limits.private_networks)


def _check_hop(url: str, limits: DownloadLimits, what: str, deadline: float, *, resolve: bool = True
               ) -> tuple[urllib.parse.SplitResult, int, list[str]]:
    """Validate one hop; returns (parsed URL, port, addresses to connect to, in order). Without resolve,
    only the URL itself is checked (no addresses are returned)."""
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme not in limits.schemes:
        raise InvalidInput(f"{what}: URL scheme {scheme[:20]!r} is not allowed (allowed: {', '.join(limits.schemes)})"
                           f": {_shown(url)}")
    host = parsed.hostname
    if not host:
        raise InvalidInput(f"{what}: URL has no host: {_shown(url)}")
    try:
        port = parsed.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise InvalidInput(f"{what}: URL has an invalid port: {_shown(url)}") from None
    if limits.allowed_hosts and host not in limits.allowed_hosts:
        raise InvalidInput(f"{what}: host {host[:100]!r} is not in the download allow-list")
    if not resolve:
        return parsed, port, []
    try:
        infos = _resolve(host, port, deadline)
    except UnicodeError:
        raise InvalidInput(f"{what}: URL has an invalid host name: {_shown(url)}") from None
    except OSError as exc:
        raise TransientError(f"{what}: cannot resolve {host[:100]!r}: {exc}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:  # every answer, not only the first: any of them could be the one reached
        if not _may_connect(address, limits):
            raise InvalidInput(
                f"{what}: {_shown(url)}: {host[:100]!r} is {address}, a loopback, private or link-local address; "
                "downloads "
                "from such addresses are refused unless the worker runs with --allow-private-urls "
                "(or HEADLESS_ALLOW_PRIVATE_URLS=1, or a list of allowed networks)")
    return parsed, port, addresses


def _resolve(host: str, port: int, deadline: float) -> list:
    # getaddrinfo has no timeout of its own; run it in a daemon thread so the deadline still holds.
    box: list = []

    def lookup() -> None:
        try:
            box.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, which raises it
            box.append(exc)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if not box:
        raise TimeoutError("name lookup took longer than the download's time limit")
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


class _Watchdog:
    """Shuts the socket down at the deadline or on a stop request, so no blocked read outlives either."""

    def __init__(self, deadline: float, should_stop: Callable[[], bool] | None) -> None:
        self.deadline = deadline
        self.should_stop = should_stop
        self.fired: str | None = None  # "deadline" or "stopped"
        self.sock: socket.socket | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="download-watchdog")
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(_WATCH_INTERVAL_S):
            if time.monotonic() >= self.deadline:
                self.fired = "deadline"
            elif self.should_stop is not None and self.should_stop():
                self.fired = "stopped"
            if self.fired:
                sock = self.sock
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return

    def close(self) -> None:
        self._done.set()


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to addresses checked beforehand (the Host header keeps the name). The raw socket
    goes to the watchdog as soon as it exists, so a stalled TLS handshake is cut off at the deadline too."""

    def __init__(self, host: str, port: int, addresses: list[str], watchdog: _Watchdog) -> None:
        super().__init__(host, port, timeout=_CONNECT_TIMEOUT_S)
        self._addresses = addresses
        self._watchdog = watchdog

    def _open(self) -> socket.socket:
        last: OSError | None = None
        for address in self._addresses:  # in resolver order, like create_connection itself
            remaining = self._watchdog.deadline - time.monotonic()
            if remaining <= 0 or self._watchdog.fired:
                break
            try:
                sock = socket.create_connection((address, self.port), min(_CONNECT_TIMEOUT_S, remaining))
            except OSError as exc:
                last = exc
                continue
            self._watchdog.sock = sock
            if self._watchdog.fired:  # it fired while we were connecting
                sock.close()
                break
            return sock
        raise last or OSError("no connection within the time limit")

    def connect(self) -> None:
        self.sock = self._open()


class _PinnedHTTPS(_PinnedHTTP):
    default_port = 443

    def connect(self) -> None:
        context = ssl.create_default_context()
        self.sock = context.wrap_socket(self._open(), server_hostname=self.host)


def download_to_cache(url: str, cache_dir: Path, limits: DownloadLimits, *, what: str = "file",
                      should_stop: Callable[[], bool] | None = None) -> Path:
    """Fetch url once into cache_dir (named by its SHA-256) and return the local path.

    should_stop (e.g. the task's cancellation check, which includes its time limit) aborts the download
    with TaskCancelled."""
    if not isinstance(url, str):
        raise InvalidInput(f"{what}: expected a URL string")
    deadline = time.monotonic() + limits.timeout_s
    # Refuse a malformed or disallowed URL before touching the cache; addresses are checked when fetching
    # (a file already cached was checked then, and needs no DNS now).
    _check_hop(url, limits, what, deadline, resolve=False)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + _suffix_of(url))
    if target.is_file():
        return target
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.part")
    watchdog = _Watchdog(deadline, should_stop)
    try:
        _fetch(url, tmp, limits, what, deadline, watchdog)
        os.replace(tmp, target)
        return target
    finally:
        watchdog.close()
        tmp.unlink(missing_ok=True)


def _fetch(url: str, tmp: Path, limits: DownloadLimits, what: str, deadline: float, watchdog: _Watchdog) -> None:
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        parsed, port, addresses = _check_hop(current, limits, what, deadline)
        conn_class = _PinnedHTTPS if parsed.scheme.lower() == "https" else _PinnedHTTP
        conn = conn_class(parsed.hostname, port, addresses, watchdog)
        try:
            # Spaces, control and non-ASCII characters are percent-encoded (http.client would refuse them).
            path = urllib.parse.quote(parsed.path or "/", safe=_URL_SAFE)
            if parsed.query:
                path += "?" + urllib.parse.quote(parsed.query, safe=_URL_SAFE + "?")
            try:
                conn.connect()
                conn.request("GET", path, headers={"User-Agent": "headless-wan", "Accept-Encoding": "identity"})
                response = conn.getresponse()
                if response.status in _REDIRECTS:
                    location = response.getheader("Location")
                    if not location:
                        raise InvalidInput(f"{what}: {_shown(current)} redirected (HTTP {response.status}) "
                                           "without a Location")
                    current = urllib.parse.urljoin(current, location.strip())
                    continue  # the next hop is checked at the top of the loop
                if 400 <= response.status < 500 and response.status not in (408, 429):
                    raise InvalidInput(f"{what}: {_shown(current)} answered HTTP {response.status}")
                if response.status != 200:
                    raise TransientError(f"{what}: {_shown(current)} answered HTTP {response.status}")
                _read_body(response, tmp, limits, what, current, watchdog)
                return
            except (OSError, http.client.HTTPException) as exc:
                _raise_stopped(watchdog, what, current, limits)
                raise TransientError(f"{what}: could not download {_shown(current)}: "
                                     f"{type(exc).__name__}: {str(exc)[:200]}") from None
        finally:
            watchdog.sock = None
            conn.close()
    raise InvalidInput(f"{what}: more than {MAX_REDIRECTS} redirects from {_shown(url)}")


def _raise_stopped(watchdog: _Watchdog, what: str, url: str, limits: DownloadLimits) -> None:
    if watchdog.fired == "stopped":
        raise TaskCancelled(f"{what}: download of {_shown(url)} stopped (task cancelled or out of time)")
    if watchdog.fired == "deadline" or time.monotonic() >= watchdog.deadline:
        raise TransientError(f"{what}: download of {_shown(url)} took longer than {limits.timeout_s:g} s")


def _read_body(response: http.client.HTTPResponse, tmp: Path, limits: DownloadLimits, what: str, url: str,
               watchdog: _Watchdog) -> None:
    declared_text = response.getheader("Content-Length")
    declared = int(declared_text) if declared_text and declared_text.strip().isdigit() else None
    if declared is not None and declared > limits.max_bytes:
        raise InvalidInput(f"{what}: {_shown(url)} is {declared} bytes, over the {limits.max_bytes}-byte limit")
    total = 0
    with open(tmp, "wb") as out:
        while True:
            # read1 returns whatever one socket read gives, so the checks below run however slowly bytes come.
            chunk = response.read1(_CHUNK)
            _raise_stopped(watchdog, what, url, limits)
            if not chunk:
                break
            total += len(chunk)
            if total > limits.max_bytes:
                raise InvalidInput(f"{what}: {_shown(url)} is over the {limits.max_bytes}-byte download limit")
            out.write(chunk)
    if declared is not None and total != declared:
        raise TransientError(f"{what}: {_shown(url)} sent {total} of its declared {declared} bytes "
                             "(connection cut short); nothing was cached")
