"""Where task files live, and how untrusted paths and URLs from params become local files.

Layout (the seed's, kept for apps that read it):
- SQLite: final files in `<db dir>/public/files/`, `output_location` = `files/<name>` (relative to `public/`).
- Otherwise: final files in `outputs/`, `output_location` = the absolute path.
Scratch work goes to `<files dir>/.work/<task id>/` and is removed after the task unless kept for debugging.

Inputs named in params are untrusted: a local path must lie inside one of the allowed input roots,
and URLs are fetched with a scheme allow-list, a size cap and a time limit (source.downloads).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from source.downloads import DownloadLimits, download_to_cache, is_url
from source.errors import InvalidInput
from source.settings import settings
from source.task_limits import excerpt

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, max_len: int = 80) -> str:
    """A file-name-safe version of text (no separators, no leading dots)."""
    cleaned = _SAFE_NAME.sub("_", text).strip("._") or "file"
    return cleaned[:max_len]


class Storage:
    def __init__(
        self,
        files_dir: Path,
        location_base: Path | None = None,
        input_roots: list[Path] | None = None,
        download_limits: DownloadLimits | None = None,
    ) -> None:
        self.files_dir = Path(files_dir).resolve()
        self.location_base = Path(location_base).resolve() if location_base else None
        self.files_dir.mkdir(parents=True, exist_ok=True)
        roots = [self.files_dir] + ([self.location_base] if self.location_base else []) + list(input_roots or [])
        self.input_roots = [Path(r).resolve() for r in roots]
        self.download_limits = download_limits or DownloadLimits()
        self.download_dir = self.files_dir / ".downloads"

    @classmethod
    def for_database(cls, db_url: str, *, outputs_dir: Path | None = None,
                     input_roots: list[Path] | None = None) -> Storage:
        """SQLite: `public/files/` beside the database file; other databases: `outputs/`."""
        if db_url.startswith("sqlite:///") and ":memory:" not in db_url:
            db_path = Path(db_url[len("sqlite:///"):]).resolve()
            public = db_path.parent / "public"
            return cls(public / "files", location_base=public, input_roots=input_roots)
        out = Path(outputs_dir or settings().output_dir).resolve()
        return cls(out, location_base=None, input_roots=input_roots)

    # -- outputs -------------------------------------------------------------------------------
    def work_dir(self, task_id: str) -> Path:
        d = self.files_dir / ".work" / safe_name(task_id)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def remove_work_dir(self, task_id: str) -> None:
        path = os.path.join(self.files_dir, ".work", safe_name(task_id))
        if os.path.lexists(path):  # most tasks never made one: skip rmtree's own work
            shutil.rmtree(path, ignore_errors=True)

    def output_path(self, task_id: str, suffix: str, stem: str | None = None) -> Path:
        """A final path unique to the task: `<stem>_<task id><suffix>` inside the files dir."""
        name = f"{safe_name(stem)}_{safe_name(task_id)}" if stem else safe_name(task_id)
        return self.files_dir / f"{name}{suffix}"

    def local_path(self, location: str) -> Path:
        """The file behind an output_location this storage wrote (the inverse of location_for)."""
        path = Path(location)
        if not path.is_absolute() and self.location_base is not None:
            path = self.location_base / path
        return path.resolve()

    def location_for(self, path: Path) -> str:
        path = Path(path).resolve()
        if self.location_base is not None and path.is_relative_to(self.location_base):
            return path.relative_to(self.location_base).as_posix()
        return str(path)

    # -- inputs --------------------------------------------------------------------------------
    def resolve_input(self, ref: str, *, kind: str = "file", should_stop=None) -> Path:
        """A local path for an untrusted reference: an http(s) URL, or a path inside an input root.
        Relative paths are tried against the location base (so `files/x.mp4` works), then the files dir."""
        if not isinstance(ref, str) or not ref.strip():
            raise InvalidInput(f"{kind}: expected a path or URL, got {excerpt(ref)}")
        ref = ref.strip()
        if is_url(ref):
            return download_to_cache(ref, self.download_dir, self.download_limits, what=kind,
                                     should_stop=should_stop)
        if "\x00" in ref:
            raise InvalidInput(f"{kind}: invalid path")
        candidates = []
        p = Path(ref).expanduser()
        if p.is_absolute():
            candidates.append(p)
        else:
            if self.location_base is not None:
                candidates.append(self.location_base / p)
            candidates.append(self.files_dir / p)
            candidates.append(Path.cwd() / p)
        allowed_but_missing = None
        for c in candidates:
            resolved = c.resolve()
            if not any(resolved.is_relative_to(root) for root in self.input_roots):
                continue
            if resolved.is_file():
                return resolved
            allowed_but_missing = resolved
        if allowed_but_missing is not None:
            raise InvalidInput(f"{kind} not found: {excerpt(ref)}")
        raise InvalidInput(
            f"{kind} {excerpt(ref)} is outside the allowed input folders "
            f"({', '.join(str(r) for r in self.input_roots)}); pass --input-root to allow another folder"
        )
