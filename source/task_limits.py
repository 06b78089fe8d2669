"""What a task row may hold, and how messages quote what it holds.

A row is written by apps, other tools or people, so nothing in it may take a worker down: params are
read here under documented caps (size in bytes, nesting depth; both in Settings) and every problem is
an InvalidInput that fails that one row with a clear message. A message quotes at most a short
`excerpt()` of an offending value, so a 100 KB task type or prompt never becomes a 100 KB log line or
error_message.
"""

from __future__ import annotations

from typing import Any

from source.errors import InvalidInput
from source.settings import settings

EXCERPT_CHARS = 80  # enough to recognise a value; short enough for a log line


def clip(text: Any, limit: int = 200) -> str:
    """Text for a log field or message, cut to `limit` characters, saying how much was left out."""
    text = text if isinstance(text, str) else str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """A value quoted in a message: its `repr` when short, else the repr of its start and its end (a long path
    keeps its file name) and its length. Values a little over the limit are quoted whole."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= 2 * limit:
        return repr(value) if isinstance(value, str) else text
    half = limit // 2
    return f"{text[:half]!r}...{text[-half:]!r} ({len(text):,} characters)"


def nesting_depth_exceeds(value: Any, limit: int) -> bool:
    """True when lists/objects nest deeper than `limit`. Iterative: a deep value cannot overflow the stack."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


class UndecodableText(str):
    """Text a row holds that is not valid UTF-8 (e.g. an app wrote latin-1 bytes into a SQLite TEXT
    column): the bad bytes show as U+FFFD, and `problem` says where they are. Reading such a row never
    fails; parse_params refuses it as params."""

    problem: str


def decode_text(data: bytes) -> str:
    """A database text value: UTF-8, or an UndecodableText saying why it is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = UndecodableText(data.decode("utf-8", "replace"))
        text.problem = f"byte 0x{data[exc.start]:02x} at position {exc.start} is not valid UTF-8"
        return text


def read_params(raw: Any) -> Any:
    """A row's params (JSON text, bytes, or already decoded), checked against the caps.

    Raises InvalidInput for anything wrong, never another exception: the caller fails the row."""
    import json

    limits = settings()
    if isinstance(raw, (bytes, bytearray)):
        raw = decode_text(bytes(raw))
    if isinstance(raw, UndecodableText):
        raise InvalidInput(f"params could not be decoded: {raw.problem} (the row was written in another"
                           " encoding; params must be UTF-8 JSON)")
    if isinstance(raw, str):
        # Characters are a lower bound on bytes: most oversized params are refused without encoding them.
        size = len(raw) if len(raw) > limits.max_params_bytes else len(raw.encode("utf-8", "surrogatepass"))
        if size > limits.max_params_bytes:
            raise InvalidInput(f"params are {size:,} bytes; the limit is {limits.max_params_bytes:,} "
                               "(HEADLESS_MAX_PARAMS_BYTES): pass large data as a file path or URL")
        try:
            params = json.loads(raw)
        except RecursionError:
            raise InvalidInput(f"params nest too deeply to read (the limit is {limits.max_params_depth} "
                               "levels, HEADLESS_MAX_PARAMS_DEPTH)") from None
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"params are not valid JSON: {str(exc)[:200]}") from None
    else:
        params = raw
    if nesting_depth_exceeds(params, limits.max_params_depth):
        raise InvalidInput(f"params nest deeper than {limits.max_params_depth} levels "
                           "(HEADLESS_MAX_PARAMS_DEPTH)")
    return params
