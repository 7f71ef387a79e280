"""Header fields as bytes: RFC 2047 encoded-words for non-ASCII text, RFC 5322 folding, and
no way for data to inject a header (control characters in text become spaces; an address with
one is an error)."""

from __future__ import annotations

import base64
import re

from mailer.errors import TemplateError

#: RFC 5322 §2.1.1: lines SHOULD be at most 78 characters, excluding CRLF.
MAX_LINE = 78
#: Longer words are sent as encoded-words, which can be split, so no line passes 78.
_MAX_WORD = 66
#: Bytes of text per encoded-word: `=?utf-8?b?` + 56 base64 chars + `?=` = 68 characters, under
#: RFC 2047's 75 and short enough that `Reply-To: ` plus one word still fits in 78.
_CHUNK_BYTES = 42

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_SPACES = re.compile(r"\s+")
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*")
_BAD_IN_ADDRESS = re.compile(r"[\x00-\x20\x7f<>()\[\],;:\\\"]")
#: A word (a run between single spaces) longer than `_MAX_WORD`.
_LONG_WORD = re.compile(f"[^ ]{{{_MAX_WORD + 1},}}")


def clean_text(value: str) -> str:
    """One line of text: control characters (CR, LF, TAB, NUL …) become single spaces."""
    # isprintable() is False for every control, line or paragraph separator and every space
    # but " ": when it holds, only runs of " " and the ends could change.
    if value.isprintable() and "  " not in value and value[:1] != " " and value[-1:] != " ":
        return value
    return _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip()


def encoded_words(text: str) -> list[str]:
    """`text` as base64 encoded-words, each ≤75 chars, never splitting a UTF-8 character."""
    whole = text.encode("utf-8")
    if len(whole) <= _CHUNK_BYTES:  # most names and many subjects fit one word
        return [f"=?utf-8?b?{base64.b64encode(whole).decode('ascii')}?="]
    words, chunk = [], b""
    for char in text:
        raw = char.encode("utf-8")
        if len(chunk) + len(raw) > _CHUNK_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += raw
    if chunk:
        words.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words]


def fold(name: str, words: list[str]) -> bytes:
    """`Name: w1 w2 …` folded with CRLF+space so lines stay ≤78 where a word allows."""
    start = f"{name}:"
    if words:
        line = f"{start} {' '.join(words)}"
        if len(line) <= MAX_LINE:  # fits on one line: what the loop below would give
            return (line + "\r\n").encode("utf-8")
    # A word goes on the current line if it fits, or if the line has no word yet.
    pieces, width = [start], len(start)
    for n, word in enumerate(words):
        if n and width + 1 + len(word) > MAX_LINE:
            pieces.append("\r\n ")
            width = 1 + len(word)
        else:
            pieces.append(" ")
            width += 1 + len(word)
        pieces.append(word)
    pieces.append("\r\n")
    return "".join(pieces).encode("utf-8")


def unstructured(name: str, value: str) -> bytes:
    """An unstructured header (Subject): plain when ASCII, encoded-words otherwise."""
    text = clean_text(value)
    if _is_plain(text):
        return fold_spaced(name, text)
    return fold_spaced(name, " ".join(encoded_words(text)))


def fold_spaced(name: str, text: str) -> bytes:
    """`fold(name, text.split(" "))` for text of words (none empty) between single spaces, as
    `clean_text` leaves it and encoded-words and URIs are: the lines are cut at the
    last space that fits (`str.rfind`), not built word by word (a subject per organization
    is folded for every message, ~6 µs the word-by-word way)."""
    line = f"{name}: {text}"
    if len(line) <= MAX_LINE:
        return (line + "\r\n").encode("utf-8")
    lines = []
    start, first = 0, len(name) + 2  # a line keeps its first word whatever its length
    while len(line) - start > MAX_LINE:
        cut = line.rfind(" ", first, start + MAX_LINE + 1)
        if cut < 0:
            cut = line.find(" ", first)
            if cut < 0:
                break
        lines.append(line[start:cut])
        start, first = cut, cut + 1  # the space opens the next line: the folding white space
    lines.append(line[start:])
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _is_plain(text: str) -> bool:
    """ASCII with no word too long to fold and nothing a reader would decode as a word."""
    # one regex scan, only when the text is long enough to hold such a word
    return (
        text.isascii()
        and "=?" not in text
        and (len(text) <= _MAX_WORD or _LONG_WORD.search(text) is None)
    )


def phrase_words(display_name: str) -> list[str]:
    """A display name as header words: atoms, a quoted string, or encoded-words."""
    text = clean_text(display_name)
    if not text:
        return []
    if not _is_plain(text):
        return encoded_words(text)
    if _ATOMS.fullmatch(text):
        return text.split(" ")
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    if len(escaped) > _MAX_WORD:  # a quoted string cannot be folded by `fold`
        return encoded_words(text)
    return [f'"{escaped}"']


def check_address(address: str, what: str = "address") -> str:
    """An addr-spec fit for a header and the envelope, or a TemplateError (no injection)."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or _BAD_IN_ADDRESS.search(address):
        raise TemplateError(what, f"{address!r} is not a usable email address")
    if not domain.isascii():
        # An IDN domain goes out as its ASCII form; only a non-ASCII local part needs SMTPUTF8.
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise TemplateError(what, f"{address!r} has an unusable domain: {exc}") from exc
    return f"{local}@{domain}"


def mailbox(name: str, display_name: str, address: str) -> bytes:
    """`Name: Display <addr>`; the address goes raw (UTF-8 only when its local part needs it)."""
    words = phrase_words(display_name)
    return fold(name, [*words, f"<{check_address(address, name)}>"])


def parse_mailbox(value: str) -> tuple[str, str]:
    """Split a configured `Display Name <addr@host>` (or a bare address) into its parts."""
    value = value.strip()
    m = re.fullmatch(r"(.*?)\s*<([^<>]+)>", value)
    if not m:
        return "", value
    return m.group(1).strip().strip('"'), m.group(2).strip()
