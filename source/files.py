"""Local files every layer shares: a file's content hash, and a file or folder built once across processes.

- `sha256_file(path)`: the SHA-256 of a file's bytes, memoised by (path, size, mtime), so a warm worker
  never re-hashes an unchanged input, LoRA or output.
- `exclusive_lock(path)`: an advisory lock on a lock file; the kernel releases it if the holder dies.
- `build_once(target, build, ready)`: several worker processes may start at once and all need the same
  model folder or file: one builds it in a temporary path beside the target and renames it into place
  (atomic: nobody sees half of it); the others wait on the lock and then find it ready.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

_CHUNK = 1 << 20
_hash_memo: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def sha256_file(path: Path | str) -> str:
    """SHA-256 (hex) of a file's bytes, memoised by (path, size, mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        known = _hash_memo.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(p, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    with _hash_lock:
        _hash_memo[key] = value
    return value


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path` (created if missing) for the block."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def build_once(target: Path, build: Callable[[Path], None], ready: Callable[[Path], bool]) -> Path:
    """`target` (a folder), built by `build(tmp_folder)` once across processes if `ready(target)` is false.

    The build happens in a temporary folder beside the target, renamed into place when complete; a folder
    left half-written by an older layout is replaced."""
    if ready(target):
        return target
    root = target.parent
    with exclusive_lock(root / f".{target.name}.lock"):
        if ready(target):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
        try:
            build(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target
