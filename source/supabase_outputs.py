"""Publishing finished outputs to Supabase Storage, so `output_location` is a URL (public bucket: the
public URL; private bucket: the authenticated object URL, signed on demand for other tasks).

With many GPU machines on one database, a file written on one machine is not on the others: a travel
stitch or an extract_frame running elsewhere could not read it, and neither could the app showing the
result. The seed worker's Supabase mode uploaded outputs to a Storage bucket (`image_uploads` by default)
and recorded the public URL; this does the same with supabase-py, and other tasks then fetch the URL
through the bounded downloader like any other URL input.

Object names are `<project_id or "system">/<file stem>-<first 12 hex of the content's SHA-256><suffix>`:
content-addressed, so a regenerated task gets a new URL and nobody is served a stale cached copy.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path

from source.errors import TransientError
from source.files import sha256_file
from source.settings import DEFAULT_SUPABASE_BUCKET, settings

DEFAULT_BUCKET = DEFAULT_SUPABASE_BUCKET


@dataclass(frozen=True)
class SupabaseStorageConfig:
    url: str
    key: str
    bucket: str = DEFAULT_BUCKET
    timeout_s: float = 300.0

    @classmethod
    def from_environment(cls, url: str | None = None, key: str | None = None,
                         bucket: str | None = None) -> SupabaseStorageConfig | None:
        """Flags first, then the seed's environment names (read once, in Settings). None when no Supabase
        URL is configured."""
        env = settings()
        url = url or env.supabase_url
        if not url:
            return None
        key = key or env.supabase_key
        if not key:
            raise ValueError("a Supabase URL is set but no key: pass --supabase-key or set "
                             "SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SERVICE_KEY / SUPABASE_ANON_KEY)")
        return cls(url=url.rstrip("/"), key=key, bucket=bucket or env.supabase_bucket)


class SupabaseOutputs:
    def __init__(self, config: SupabaseStorageConfig) -> None:
        from supabase import ClientOptions, create_client  # only workers that publish import it

        self.config = config
        self.description = f"Supabase Storage bucket {config.bucket!r} at {config.url}"
        options = ClientOptions(storage_client_timeout=int(config.timeout_s), auto_refresh_token=False,
                                persist_session=False)
        self._storage = create_client(config.url, config.key, options=options).storage
        self._bucket = self._storage.from_(config.bucket)
        self._public: bool | None = None  # asked once, at the first publish

    def object_name(self, path: Path, project_id: str | None) -> str:
        folder = "".join(c if c.isalnum() or c in "-_." else "_" for c in (project_id or "system")) or "system"
        return f"{folder}/{path.stem}-{sha256_file(path)[:12]}{path.suffix.lower()}"

    def publish(self, path: Path, project_id: str | None = None) -> str:
        """Upload one file (overwriting an earlier upload of the same content) and return its public URL.
        A refused or failed upload raises TransientError: the file is fine, so the task is retried."""
        from storage3.exceptions import StorageApiError

        name = self.object_name(path, project_id)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        try:
            with open(path, "rb") as f:
                self._bucket.upload(name, f, {"content-type": content_type, "upsert": "true"})
        except StorageApiError as exc:
            raise TransientError(f"Supabase Storage refused the upload of {path.name} to bucket "
                                 f"{self.config.bucket!r}: {exc}") from exc
        except Exception as exc:  # network: httpx errors, timeouts
            raise TransientError(f"upload of {path.name} to Supabase Storage failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
        return self._location(name)

    def _location(self, name: str) -> str:
        """A public bucket's objects get their public URL; a private bucket's the authenticated object URL
        (`.../storage/v1/object/authenticated/<bucket>/<name>`): the project's owner reads it with their
        session (the storage policy of supabase/migrations), and a worker asks for a signed URL
        (signed_url_for) when another task needs the file."""
        if self._public is None:
            try:
                self._public = bool(self._storage.get_bucket(self.config.bucket).public)
            except Exception as exc:  # network or a refused key: the upload is retried
                raise TransientError(f"could not read bucket {self.config.bucket!r} of Supabase Storage: "
                                     f"{type(exc).__name__}: {exc}") from exc
        if self._public:
            return self._bucket.get_public_url(name)
        return f"{self.config.url}/storage/v1/object/authenticated/{self.config.bucket}/{name}"
