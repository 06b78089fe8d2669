"""Hugging Face Hub access for model files and LoRAs, and the one rule mapping Hub failures to task errors.

Settings come from `source.settings.settings()`: `hf_cache` (HEADLESS_HF_CACHE), `hf_token` (HF_TOKEN, a
secret never logged), `hub_offline` (HF_HUB_OFFLINE).

`classify_hub_error(exc, what)`:
- gated / not found / bad revision: InvalidInput (asking again will not help);
- not in the local cache while the Hub is offline: InvalidInput. Offline-and-not-cached is permanent for
  this worker; retrying it only burned the attempts with backoff (issue 10);
- network trouble while online: TransientError (worth another try later).
Loaders (diffusers, transformers) wrap the Hub's exceptions in OSError; the cause chain is inspected too.
"""

from __future__ import annotations

from pathlib import Path

from source.errors import InvalidInput, TransientError

_NOT_FOUND = ("RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError", "RemoteEntryNotFoundError")
_NOT_CACHED = ("LocalEntryNotFoundError", "OfflineModeIsEnabled")
_NETWORK = ("ConnectionError", "Timeout", "ReadTimeout", "ConnectTimeout", "HfHubHTTPError", "ChunkedEncodingError",
            "HTTPError", "ConnectError", "ReadError")
_NOT_CACHED_TEXT = ("offline", "local_files_only", "cannot find the requested files in the local cache",
                    "couldn't find them in the cached files", "not the path to a directory",
                    "outgoing traffic has been disabled")


def hf_cache_dir() -> str | None:
    from source.settings import settings

    return settings().hf_cache


def hf_token() -> str | None:
    from source.settings import settings

    return settings().hf_token


def hub_offline() -> bool:
    from source.settings import settings

    return settings().hub_offline


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 8:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def classify_hub_error(exc: BaseException, what: str) -> Exception:
    """The task error for a failed Hub download or cache lookup of `what` (see the module docstring)."""
    chain = _chain(exc)
    names = [type(e).__name__ for e in chain]
    name = names[0]
    first_line = str(exc).splitlines()[0][:300] if str(exc) else name
    text = " ".join(str(e) for e in chain).lower()
    if "GatedRepoError" in names:
        return InvalidInput(f"{what} is gated: accept its licence on huggingface.co and set HF_TOKEN ({first_line})")
    found = [n for n in names if n in _NOT_FOUND]
    if found:
        return InvalidInput(f"{what} was not found on the Hugging Face Hub ({found[0]}: {first_line}); "
                            f"check the name/revision, or set HF_TOKEN for a private repo")
    not_cached = any(n in _NOT_CACHED for n in names) or any(t in text for t in _NOT_CACHED_TEXT)
    if hub_offline():
        # offline: nothing but the local cache can help, and it does not have the files
        return InvalidInput(f"{what} is not in the local cache and the worker is offline (HF_HUB_OFFLINE=1): "
                            f"download it first (e.g. `hf download <repo>`), point the catalog at a local path, "
                            f"or unset HF_HUB_OFFLINE ({name})")
    if not_cached or any(n in _NETWORK for n in names):
        return TransientError(f"could not download {what} ({name}: {first_line}); will retry")
    return TransientError(f"could not fetch {what} ({name}: {first_line})")


def hub_file(repo: str, filename: str, revision: str | None = None) -> Path:
    """One file from a Hub repo, downloaded once into the HF cache (only the cache when offline)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=hf_cache_dir(), token=hf_token(),
                                    local_files_only=hub_offline()))
    except Exception as exc:  # noqa: BLE001 - mapped to a task error with a clear message
        raise classify_hub_error(exc, f"{repo}/{filename}") from None
