"""Keeping a template's content inside its cell, and the layout's footer in sight.

The compliance footer (unsubscribe link, postal address) belongs to the layout; a template only
fills the content cell. Three rules keep it that way, checked once per template load:

- the content is a closed fragment: every element it opens it closes, and it closes nothing it
  did not open, so the footer can never end up inside one of its elements;
- the content's `<style>` rules are inlined into the content alone, never into the layout;
- its CSS may style, hide or resize its own elements, but not take them out of the flow
  (`position`, `transform`, negative margins …), which could lay them over the footer.

Then the inlined document is checked as a reader would see it: no ancestor of a footer output
may hide it (`display:none`, `visibility:hidden`, `opacity:0`, `font-size:0` …).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import css_inline

from mailer.errors import TemplateError
from mailer.messages.sources import Composite, Piece, protect, restore

#: Elements that have no end tag.
_VOID = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
        "basefont",
        "bgsound",
        "frame",
        "keygen",
        "param",
    ]
)
#: Elements whose end tag HTML lets an author leave out (closed by their parent's end).
_OPTIONAL_END = frozenset(
    [
        "p",
        "li",
        "dt",
        "dd",
        "tr",
        "td",
        "th",
        "thead",
        "tbody",
        "tfoot",
        "option",
        "optgroup",
        "colgroup",
    ]
)
#: Elements whose content a reader never sees as the message (or sees only as raw text).
_HIDING_ELEMENTS = frozenset(
    [
        "head",
        "title",
        "textarea",
        "template",
        "noscript",
        "select",
        "option",
        "xmp",
        "iframe",
        "noembed",
        "noframes",
        "plaintext",
        "script",
        "style",
        "object",
    ]
)
#: Inline styles that hide an element and everything in it.
_HIDING_STYLE = re.compile(
    r"(?:^|;)\s*(?:display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse)"
    r"|opacity\s*:\s*0*(?:\.0*)?%?\s*(?:!important)?\s*(?:;|$)"
    r"|font-size\s*:\s*0+(?:\.0*)?(?:px|pt|em|rem|%)?\s*(?:!important)?\s*(?:;|$)"
    r"|(?:max-)?height\s*:\s*0+(?:px|pt|em|rem|%)?\s*(?:!important)?\s*(?:;|$)"
    r"|mso-hide\s*:\s*all)",
    re.IGNORECASE,
)
#: Author CSS that can move an element out of its cell, e.g. over the footer.
_MOVING_STYLE = re.compile(
    r"\b(position|transform|translate|clip-path|clip|z-index|float)\s*:"
    r"|\b(margin(?:-top|-bottom|-left|-right)?|top|bottom|left|right)\s*:[^;}]*-\s*\d",
    re.IGNORECASE,
)
_STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.IGNORECASE | re.DOTALL)
_STYLE_ATTR = re.compile(r"""\bstyle\s*=\s*("[^"]*"|'[^']*')""", re.IGNORECASE)


def contain_content(piece: Piece) -> Piece:
    """The template's HTML content, checked closed and with its own CSS inlined into it only;
    TemplateError names the line of anything that could reach outside its cell."""
    text, tags = protect([piece])
    lines = _LineMap(text, tags, piece.first_line)
    _check_closed(text, lines, piece.file)
    css = "\n".join(_STYLE_BLOCK.findall(text))
    for match in [*_STYLE_BLOCK.finditer(text), *_STYLE_ATTR.finditer(text)]:
        moving = _MOVING_STYLE.search(match.group())
        if moving:
            raise TemplateError(
                piece.file,
                f"the CSS {moving.group().strip()!r} could cover or move content over the "
                "footer (unsubscribe link, postal address); style your content without "
                "position, transform, float or negative offsets",
                lines.original(text.count("\n", 0, match.start()) + 1),
            )
    try:
        inlined = css_inline.inline_fragment(_STYLE_BLOCK.sub("", text), css)
    except ValueError as exc:  # css-inline reports bad CSS as ValueError
        raise TemplateError(piece.file, f"CSS cannot be inlined: {exc}") from exc
    contained = restore(inlined, tags)
    return Piece(contained.source, piece.file, 1, tuple(line for _, _, line in tags))


class _LineMap:
    """Lines of a protected text (Jinja tags replaced by one-line placeholders) back to the
    original file's lines."""

    def __init__(self, text: str, tags: list[tuple[str, str, int]], first_line: int) -> None:
        self._shift: list[tuple[int, int]] = []  # (protected line, newlines removed before it)
        removed, pos = 0, 0
        for index, (tag, _, _) in enumerate(tags):
            pos = text.index(f"XJINJA{index}X", pos)
            removed += tag.count("\n")
            self._shift.append((text.count("\n", 0, pos) + 1, removed))
        self._first = first_line

    def original(self, line: int) -> int:
        removed = 0
        for at, total in self._shift:
            if at >= line:
                break
            removed = total
        return line + removed + self._first - 1


class _Balance(HTMLParser):
    """Open elements of a fragment, as a stack of (tag, protected line)."""

    def __init__(self, file: str, lines: _LineMap) -> None:
        super().__init__(convert_charrefs=True)
        self.file, self.lines = file, lines
        self.open: list[tuple[str, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _VOID:
            self.open.append((tag, self.getpos()[0]))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <br/>, <td/>: HTML ignores the slash; a non-void one is caught as unclosed

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        names = [name for name, _ in self.open]
        if tag not in names:
            raise TemplateError(
                self.file,
                f"</{tag}> closes an element the template did not open: it would close the "
                "layout's and move the footer; remove it",
                self.lines.original(self.getpos()[0]),
            )
        while self.open:
            name, line = self.open.pop()
            if name == tag:
                return
            if name not in _OPTIONAL_END:
                raise TemplateError(
                    self.file,
                    f"<{name}> opened here is never closed before </{tag}>; close it",
                    self.lines.original(line),
                )


def _check_closed(text: str, lines: _LineMap, file: str) -> None:
    opened, closed = text.rfind("<!--"), text.rfind("-->")
    if opened > closed or (opened >= 0 and closed < 0):
        raise TemplateError(
            file,
            "an HTML comment <!-- is never closed: it would swallow the layout's footer; "
            "close it with -->",
            lines.original(text.count("\n", 0, opened) + 1),
        )
    balance = _Balance(file, lines)
    balance.feed(text)
    balance.close()
    unclosed = [(name, line) for name, line in balance.open if name not in _OPTIONAL_END]
    if unclosed:
        name, line = unclosed[0]
        raise TemplateError(
            file,
            f"<{name}> opened here is never closed: the layout's footer (unsubscribe link, "
            f"postal address) would end up inside it; close it with </{name}>",
            lines.original(line),
        )


class _FooterFinder(HTMLParser):
    """Finds which footer outputs of the layout stand in visible HTML: not in a comment, not
    inside an element that hides its content, not under an ancestor styled hidden."""

    def __init__(self, needles: tuple[str, ...]) -> None:
        super().__init__(convert_charrefs=True)
        self.needles = needles
        self.visible: set[str] = set()
        self._stack: list[tuple[str, bool]] = []  # (tag, hidden by it or an ancestor)

    @property
    def _hidden(self) -> bool:
        return bool(self._stack) and self._stack[-1][1]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        hides = (
            tag in _HIDING_ELEMENTS
            or "hidden" in values
            or bool(_HIDING_STYLE.search(values.get("style") or ""))
        )
        if not (self._hidden or hides):
            for _, value in attrs:
                self._see(value or "")
        if tag not in _VOID:
            self._stack.append((tag, self._hidden or hides))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._stack) - 1, -1, -1):
            if self._stack[depth][0] == tag:
                del self._stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self._see(data)

    def _see(self, text: str) -> None:
        self.visible.update(n for n in self.needles if n in text)


def check_footer_visible(composite: Composite, needles: tuple[str, ...], file: str) -> None:
    """Fail unless every footer output (e.g. `{{ company.postal_address }}`) is visible in the
    inlined HTML, its ancestors' styles included."""
    finder = _FooterFinder(needles)
    finder.feed(composite.source)
    finder.close()
    for needle in needles:
        if needle not in finder.visible:
            raise TemplateError(
                file,
                f"the layout's footer ({needle}) is hidden in the HTML: an element around it "
                "hides it (display:none, visibility:hidden, opacity:0, font-size:0, height:0, "
                "hidden …) or an unclosed comment or element swallows it",
            )
