"""Params that name local files, and staging those files for the command line.

Params models mark their file-valued fields once, with `Annotated[..., LOCAL_FILE]` (or
`LocalFile(key="path")` for lists of objects such as `loras[].path`); a model that validates loosely and
leaves the checking to another model names that one in `local_files_model`. `file_refs()` walks a validated
model and returns every (field, value) pair, nested models and lists included, so one walker serves every
task type. Task ids (`*_task_id`) and URLs are not files.

Rows other apps insert are untrusted: the worker confines their paths to its input roots
(source.storage). `add_task.py` is a trusted local tool instead: `stage_params()` resolves each local file
against the caller's working directory, refuses a missing one, and copies it, content-addressed, to where
every worker of that database reads (`<files dir>/inputs/<sha256>.<ext>`: `public/files/` beside a SQLite
database, the shared output folder otherwise; uploaded to Supabase Storage when the CLI is given a
Supabase project, as workers that publish there are). The stored params name the staged copy; the original
absolute paths are kept under the params key `_staged_from` (staged location -> original), so the row
records where each file came from without a schema change; the registry drops the key before validation.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from source.downloads import is_url
from source.errors import InvalidInput

STAGED_FROM_KEY = "_staged_from"
STAGED_DIR = "inputs"


@dataclass(frozen=True)
class LocalFile:
    """Field metadata: the value (a string, or a list of them) names a local file or a URL. With `key`, the
    items are objects and the file is under that key."""

    key: str | None = None


LOCAL_FILE = LocalFile()


def _strings(value: Any, key: str | None, where: str) -> list[tuple[str, str]]:
    if value is None:
        return []
    if isinstance(value, str):
        return [(where, value)] if value.strip() else []
    if isinstance(value, (list, tuple)):
        return [ref for i, item in enumerate(value) for ref in _strings(item, key, f"{where}[{i}]")]
    if key is not None:
        item = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
        return _strings(item, None, f"{where}.{key}")
    return []


def file_refs(model: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(field path, value) of every file-valued field of a validated params model, nested ones included."""
    if not isinstance(model, BaseModel):
        return []
    alternative = getattr(type(model), "local_files_model", None)
    if alternative is not None:  # a loose model whose fields another model checks (generate -> the bridge's)
        other = alternative()
        try:
            model = other.model_validate(model.model_dump())
        except ValueError:
            return []  # the handler will say what is wrong; there is nothing to stage
    refs: list[tuple[str, str]] = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name, None)
        marker = next((m for m in info.metadata if isinstance(m, LocalFile)), None)
        if marker is not None:
            refs += _strings(value, marker.key, prefix + name)
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        for i, item in enumerate(items):
            if isinstance(item, BaseModel):
                refs += file_refs(item, f"{prefix}{name}{f'[{i}]' if items is value else ''}.")
    return refs


class MissingFile(InvalidInput):
    """A file the params name does not exist (the CLI refuses the task at once)."""


class NoSharedFolder(InvalidInput):
    """There is a file to stage but no folder every worker reads was named (the CLI refuses the task)."""


class Stager:
    """Copies files, content-addressed, into `<files dir>/inputs/` of a Storage (nothing is copied twice), or,
    given a publisher (source.supabase_outputs.SupabaseOutputs), uploads them to `inputs/` of its bucket
    (object names carry the content hash; the same content maps to the same object) and names the URL."""

    def __init__(self, storage_factory, publisher=None) -> None:
        # The storage is made on first use: making it creates its folder, which a task without local files
        # (or one staged to Supabase) has no business creating. The factory may raise NoSharedFolder.
        self._storage_factory = storage_factory
        self._storage = None
        self.publisher = publisher
        self._published: dict[Path, str] = {}

    @property
    def storage(self):
        if self._storage is None:
            self._storage = self._storage_factory()
        return self._storage

    @property
    def folder(self) -> Path:
        return Path(self.storage.files_dir) / STAGED_DIR

    def stage(self, path: Path) -> str:
        if self.publisher is not None:
            if path not in self._published:  # a file named twice in one run is uploaded once
                self._published[path] = self.publisher.publish(path, STAGED_DIR)
            return self._published[path]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        suffix = "".join(c for c in path.suffix.lower() if c.isalnum() or c == ".")[:12]
        folder = self.folder
        target = folder / f"{digest.hexdigest()}{suffix}"
        if not (target.is_file() and target.stat().st_size == path.stat().st_size):
            folder.mkdir(parents=True, exist_ok=True)
            # A temporary name in the same folder, then one rename: a reader never sees half a file, and two
            # CLIs staging the same content at once both end with the one complete copy.
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".staging-")
            try:
                with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        return self.storage.location_for(target)

    def readable_already(self, ref: str) -> bool:
        """True when the workers' storage resolves `ref` itself (e.g. `files/x.mp4`, another task's output or
        an earlier staged copy): left as it is."""
        try:
            self.storage.resolve_input(ref)
            return True
        except InvalidInput:  # NoSharedFolder included: then nothing is readable to the workers yet
            return False


def _replace_strings(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, list):
        return [_replace_strings(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: _replace_strings(v, mapping) for k, v in value.items()}
    return value


def stage_params(validated: Any, params: dict[str, Any], stager: Stager, *, cwd: Path,
                 only: dict[str, Any] | None = None) -> dict[str, Any]:
    """`params` (or, for a regenerate patch, `only`: the keys to change, checked as part of `params`) with
    each local file it names staged; raises MissingFile naming the field and the path. `validated` is the
    handler's model of `params` (handler_registry.validate_params). The seed's key names differ from ours, so
    the validated model says which values are files and the raw params are rewritten by value: every string
    equal to a staged file's reference becomes the staged location."""
    target = dict(only if only is not None else params)
    given = set(_all_strings(target))
    mapping: dict[str, str] = {}
    staged_from: dict[str, str] = {}
    for where, ref in file_refs(validated):
        if ref in mapping or ref not in given or is_url(ref):
            continue
        path = Path(ref).expanduser()
        path = path if path.is_absolute() else cwd / path
        if not path.is_file():
            if stager.readable_already(ref):
                continue
            raise MissingFile(f"{where}: file not found: {ref} (looked in {path.parent})")
        location = stager.stage(path.resolve())
        mapping[ref] = location
        staged_from[location] = str(path.resolve())
    if not mapping:
        return target
    out = _replace_strings(target, mapping)
    previous = params.get(STAGED_FROM_KEY) if isinstance(params.get(STAGED_FROM_KEY), dict) else {}
    out[STAGED_FROM_KEY] = {**previous, **staged_from}
    return out


def _all_strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _all_strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _all_strings(v)
