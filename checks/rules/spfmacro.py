"""The SPF macro language (RFC 7208 section 7): parse, validate, expand.

    %{d}  %{ir}.%{v}._spf.%{d2}  %{l2r-}  %{L}  %%  %_  %-

Pure functions: the evaluator supplies the letter values (including `p`,
which needs DNS) and gets text back. Syntax problems raise SPFSyntaxError,
which check_host() turns into permerror (or, inside an explanation, into
"ignore the exp= modifier").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from checks.core.errors import MailcheckError

MAX_DOMAIN = 253  # RFC 7208 7.3: longer expansions lose labels on the left
MAX_LABEL = 63

DOMAIN_LETTERS = frozenset("slodipvh")
EXPLANATION_LETTERS = DOMAIN_LETTERS | frozenset("crt")  # c, r, t only in exp= text
DELIMITERS = ".-+,/_="

_MACRO = re.compile(r"%\{([A-Za-z])([0-9]*)([rR]?)([.\-+,/_=]*)\}")
_ESCAPES = {"%": "%", "_": " ", "-": "%20"}
# toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
_TOPLABEL = re.compile(
    r"[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9]", re.ASCII
)


class SPFSyntaxError(MailcheckError, ValueError):
    """A record, term or macro string breaks RFC 7208's grammar; the message
    names the offending text."""


@dataclass(frozen=True)
class Macro:
    """One %{...} expansion."""

    letter: str  # as written: an upper-case letter means "URL-escape the value"
    digits: int | None  # keep this many right-hand parts
    reverse: bool
    delimiters: str  # characters to split on; "" means "."

    @property
    def text(self) -> str:
        digits = "" if self.digits is None else str(self.digits)
        return f"%{{{self.letter}{digits}{'r' if self.reverse else ''}{self.delimiters}}}"


@dataclass(frozen=True)
class Escape:
    """%% %_ %- : a literal percent, a space, a URL-encoded space."""

    value: str


Part = str | Macro | Escape


def parse_macro_string(text: str, *, explanation: bool = False) -> tuple[Part, ...]:
    """Split `text` into literal pieces, macros and escapes.

    A domain-spec allows the letters s l o d i p v h; an explanation also
    c r t and spaces. Raises SPFSyntaxError naming the bad piece.
    """
    letters = EXPLANATION_LETTERS if explanation else DOMAIN_LETTERS
    parts: list[Part] = []
    literal: list[str] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char != "%":
            if not (0x21 <= ord(char) <= 0x7E or (explanation and char == " ")):
                raise SPFSyntaxError(f"character {char!r} is not allowed in {text!r}")
            literal.append(char)
            pos += 1
            continue
        if literal:
            parts.append("".join(literal))
            literal = []
        following = text[pos + 1 : pos + 2]
        if following in _ESCAPES:
            parts.append(Escape(_ESCAPES[following]))
            pos += 2
            continue
        match = _MACRO.match(text, pos)
        if following != "{" or match is None:
            shown = text[pos : text.find("}", pos) + 1 or pos + 2]
            raise SPFSyntaxError(f"invalid macro {shown!r} in {text!r}")
        letter, digits, reverse, delimiters = match.groups()
        if letter.lower() not in letters:
            what = (
                "is only allowed in explanation text"
                if letter.lower() in EXPLANATION_LETTERS
                else "is not a macro letter"
            )
            raise SPFSyntaxError(f"{match.group()!r} {what} ({text!r})")
        if digits and int(digits) == 0:  # RFC 7208 7.3: the DIGIT transformer is nonzero
            raise SPFSyntaxError(f"macro {match.group()!r} keeps zero labels ({text!r})")
        parts.append(Macro(letter, int(digits) if digits else None, bool(reverse), delimiters))
        pos = match.end()
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def parse_domain_spec(text: str) -> tuple[Part, ...]:
    """A domain-spec: a macro string that ends in a macro or in "." toplabel ["."].

    Checked before expansion (RFC 7208 7.1), so "museum", "abc.123" and
    "example.com:8080" are errors while "%{h}" is fine whatever HELO says.
    """
    if not text:
        raise SPFSyntaxError("empty domain-spec")
    parts = parse_macro_string(text)
    last = parts[-1]
    if isinstance(last, str):
        _, dot, top = last.removesuffix(".").rpartition(".")
        if not dot or not _TOPLABEL.fullmatch(top):
            raise SPFSyntaxError(
                f"{text!r} does not end in a top-level label (like .com) or a macro"
            )
    return parts


def letters(parts: tuple[Part, ...]) -> frozenset[str]:
    """The macro letters used, in lower case."""
    return frozenset(p.letter.lower() for p in parts if isinstance(p, Macro))


def expand(parts: tuple[Part, ...], values: Mapping[str, str]) -> str:
    """The text with every macro replaced; `values` maps lower-case letters to values."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, Escape):
            out.append(part.value)
        else:
            out.append(_expand_one(part, values[part.letter.lower()]))
    return "".join(out)


def _expand_one(macro: Macro, value: str) -> str:
    pieces = re.split(f"[{re.escape(macro.delimiters or '.')}]", value)
    if macro.reverse:
        pieces.reverse()
    if macro.digits is not None:
        pieces = pieces[-macro.digits :]
    text = ".".join(pieces)
    # RFC 7208 7.3: upper-case letters are URL-escaped; only "unreserved" survives.
    return quote(text, safe="") if macro.letter.isupper() else text


def target_name(expanded: str) -> str | None:
    """The DNS name to query for an expanded domain-spec, or None if no name can be.

    Drops the final dot, trims labels off the left beyond 253 characters
    (RFC 7208 7.3). An empty or over-long label cannot be queried: RFC 7208
    leaves the outcome open, and we treat it as a name that matches nothing.
    """
    name = expanded.removesuffix(".")
    while len(name) > MAX_DOMAIN and "." in name:
        name = name.split(".", 1)[1]
    labels = name.split(".")
    if not name or len(name) > MAX_DOMAIN or any(not 0 < len(x) <= MAX_LABEL for x in labels):
        return None
    return name.lower()


def is_toplabel(label: str) -> bool:
    return _TOPLABEL.fullmatch(label) is not None
