"""Making remote text safe to keep: bounded, decoded, controls made visible.

Banners, certificate fields and TXT records come from strangers. Everything
the engine stores from a server passes through `untrusted()` first, so a
report can hold no terminal escape, NUL or megabyte line, whatever renders it.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """Control and bidi-override characters as `\\xNN`/`\\uNNNN` escapes (tab kept)."""

    def escape(m: re.Match[str]) -> str:
        code = ord(m.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL.sub(escape, text)


def untrusted(data: bytes | str, limit: int = 512) -> str:
    """Remote bytes or text as one safe line of at most `limit` characters."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    text = visible(text.rstrip("\r\n"))
    return text if len(text) <= limit else text[: limit - 1] + "…"
