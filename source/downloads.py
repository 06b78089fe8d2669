"""Bounded downloads of untrusted URLs: scheme allow-list, size cap, time limit, cached by URL hash."""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from source.errors import InvalidInput, TransientError


@dataclass(frozen=True)
class DownloadLimits:
    schemes: tuple[str, ...] = ("https", "http")
    max_bytes: int = int(os.environ.get("HEADLESS_MAX_DOWNLOAD_BYTES", 2 * 1024**3))
    timeout_s: float = float(os.environ.get("HEADLESS_DOWNLOAD_TIMEOUT_S", 120))
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)  # empty: any host


def is_url(ref: str) -> bool:
    return "://" in ref[:16]


def _suffix_of(url: str) -> str:
    suffix = Path(urllib.parse.urlparse(url).path).suffix.lower()
    return suffix if suffix.isascii() and len(suffix) <= 10 and suffix[1:].isalnum() else ""


def download_to_cache(url: str, cache_dir: Path, limits: DownloadLimits, *, what: str = "file") -> Path:
    """Fetch url once into cache_dir (named by its SHA-256) and return the local path."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme.lower() not in limits.schemes:
        raise InvalidInput(f"{what}: URL scheme {parsed.scheme!r} is not allowed (allowed: {', '.join(limits.schemes)})")
    if not parsed.hostname:
        raise InvalidInput(f"{what}: URL has no host: {url}")
    if limits.allowed_hosts and parsed.hostname not in limits.allowed_hosts:
        raise InvalidInput(f"{what}: host {parsed.hostname!r} is not in the download allow-list")
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + _suffix_of(url))
    if target.is_file():
        return target
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    deadline = time.monotonic() + limits.timeout_s
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "headless-wan"})
        with urllib.request.urlopen(request, timeout=min(30.0, limits.timeout_s)) as response, open(tmp, "wb") as out:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limits.max_bytes:
                raise InvalidInput(f"{what}: {url} is {int(declared)} bytes, over the {limits.max_bytes}-byte limit")
            total = 0
            while chunk := response.read(1 << 20):
                total += len(chunk)
                if total > limits.max_bytes:
                    raise InvalidInput(f"{what}: {url} is over the {limits.max_bytes}-byte download limit")
                if time.monotonic() > deadline:
                    raise TransientError(f"{what}: download of {url} took longer than {limits.timeout_s:.0f} s")
                out.write(chunk)
        os.replace(tmp, target)
        return target
    except urllib.error.HTTPError as exc:
        if 400 <= exc.code < 500 and exc.code not in (408, 429):
            raise InvalidInput(f"{what}: {url} answered HTTP {exc.code}") from None
        raise TransientError(f"{what}: {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TransientError(f"{what}: could not download {url}: {reason}") from None
    finally:
        tmp.unlink(missing_ok=True)
