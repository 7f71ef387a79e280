"""Template sources before compiling: layout + content, CSS inlined once, text derived from HTML.

CSS is inlined into the *source* once per template load, not into every message: css-inline
takes ~74 µs for a 4 KB document, half the whole per-message budget (docs/performance.md §2).
Jinja tags are swapped for inert placeholders while the HTML parser runs and swapped back
afterwards; if the parser moved or dropped one (a `{% for %}` directly inside `<table>` is
foster-parented out of it, a tag inside `<style>` is removed), loading fails and names the line.

Composite sources keep a map from their lines to (file, line) of the original files, so a render
error points at the template file the author edits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import css_inline
import html2text

from mailer.errors import TemplateError

#: The marker in a layout where the template's content goes.
CONTENT_MARKER = "{# content #}"

_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_PLACEHOLDER = re.compile(r"XJINJA(\d+)X")

_INLINER = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


@dataclass(frozen=True)
class Piece:
    """Part of a composite source and where it came from."""

    text: str
    file: str
    first_line: int = 1
    #: The original line of each Jinja tag in order, when `text` was derived (HTML → text).
    tag_lines: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Composite:
    """A compiled-ready source and, per line, the original (file, line) of its Jinja tags."""

    source: str
    origins: dict[int, tuple[str, int]]

    def origin(self, line: int) -> tuple[str, int] | None:
        """The original file and line for `line` of this source (nearest tag at or above)."""
        for candidate in range(line, 0, -1):
            if candidate in self.origins:
                return self.origins[candidate]
        return None


def around_content(layout: str, layout_file: str, content: Piece) -> list[Piece]:
    """Split a layout at its content marker and put `content` in between."""
    before, marker, after = layout.partition(CONTENT_MARKER)
    if not marker:
        raise TemplateError(layout_file, f"the layout has no {CONTENT_MARKER} marker")
    return [
        Piece(before, layout_file, 1),
        content,
        Piece(after, layout_file, 1 + before.count("\n")),
    ]


def protect(pieces: list[Piece]) -> tuple[str, list[tuple[str, str, int]]]:
    """Replace every Jinja tag with a placeholder; return the text and the tags with origins."""
    out: list[str] = []
    tags: list[tuple[str, str, int]] = []
    for piece in pieces:
        pos, line = 0, piece.first_line
        for k, m in enumerate(_TAG.finditer(piece.text)):
            line += piece.text.count("\n", pos, m.start())
            out.append(piece.text[pos : m.start()])
            out.append(f"XJINJA{len(tags)}X")
            tag_line = piece.tag_lines[k] if piece.tag_lines else line
            tags.append((m.group(), piece.file, tag_line))
            line += m.group().count("\n")
            pos = m.end()
        out.append(piece.text[pos:])
    return "".join(out), tags


def restore(text: str, tags: list[tuple[str, str, int]]) -> Composite:
    """Put the Jinja tags back; fail if HTML processing moved, dropped or doubled any."""
    out: list[str] = []
    origins: dict[int, tuple[str, int]] = {}
    pos, line, expected = 0, 1, 0
    for m in _PLACEHOLDER.finditer(text):
        index = int(m.group(1))
        if index != expected or index >= len(tags):
            tag, file, tag_line = tags[min(expected, len(tags) - 1)]
            raise TemplateError(
                file,
                f"the HTML around {tag!r} does not survive CSS inlining (the HTML parser moved "
                "it): put loops and conditions inside a table cell or around whole elements, "
                "never directly inside <table>/<tr> or <style>",
                tag_line,
            )
        chunk = text[pos : m.start()]
        out.append(chunk)
        line += chunk.count("\n")
        tag, file, tag_line = tags[index]
        origins.setdefault(line, (file, tag_line))
        out.append(tag)
        line += tag.count("\n")
        pos, expected = m.end(), expected + 1
    if expected != len(tags):
        tag, file, tag_line = tags[expected]
        raise TemplateError(
            file, f"{tag!r} was lost when the HTML was parsed for CSS inlining", tag_line
        )
    out.append(text[pos:])
    return Composite("".join(out), origins)


def compose(pieces: list[Piece]) -> Composite:
    """Join pieces as they are (text parts), keeping the line map."""
    text, tags = protect(pieces)
    return restore(text, tags)


def inline_css(pieces: list[Piece]) -> Composite:
    """Join pieces and inline their `<style>` rules into `style=""` attributes, once."""
    text, tags = protect(pieces)
    try:
        inlined = _INLINER.inline(text)
    except ValueError as exc:  # css-inline reports bad CSS as ValueError
        raise TemplateError(pieces[0].file, f"CSS cannot be inlined: {exc}") from exc
    return restore(inlined, tags)


def html_to_text(piece: Piece) -> Piece:
    """A text version of an HTML template (used when there is no .txt sibling)."""
    text, tags = protect([Piece(piece.text, piece.file, piece.first_line)])
    converter = html2text.HTML2Text()
    converter.body_width = 0  # the QP encoder folds long lines; wrapping here breaks links
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converted = converter.handle(text)
    order = [int(i) for i in _PLACEHOLDER.findall(converted)]
    restored = _PLACEHOLDER.sub(lambda m: tags[int(m.group(1))][0], converted).rstrip() + "\n"
    # The header comment renders as nothing; the blank lines html2text put after it should too.
    restored = re.sub(r"\A(\{#.*?#\})\s+", r"\1", restored, flags=re.S)
    return Piece(restored, piece.file, 1, tuple(tags[i][2] for i in order))
