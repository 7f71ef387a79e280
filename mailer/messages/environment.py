"""The one Jinja2 environment every template is compiled in: sandboxed, strict, autoescaped HTML.

The sandbox also bounds what a template can cost: `**`, `*`, `+` and `%` refuse results larger
than a message could use (checked before computing, so `9**(9**10)` is refused at once and
never folded at compile time), and every `for` loop checks the render's time budget
(`render_budget`), so nested loops over long text fail the message instead of the worker.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from types import CodeType
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from mailer.messages.context import CONTEXT_VIEWS

#: The public data fields of each context view: the only attributes the fast path serves.
_VIEW_FIELDS = {cls: frozenset(f.name for f in fields(cls)) for cls in CONTEXT_VIEWS.values()}


#: Most items a string or list made by `*`, `+` or `%` may have.
MAX_SEQUENCE = 10_000
#: Most bits an integer made by `**` or `*` may have (a 300-digit number is far past any use).
MAX_INT_BITS = 1024
#: Most items `range()` may give.
MAX_RANGE = 10_000
#: A `%` format with a width or precision of this many digits or more would build huge text.
_WIDE_FORMAT = re.compile(r"%[-#0 +]*(\d{5,}|\*|\.\d{5,})")

_budget = threading.local()


class RenderTimeout(SecurityError):
    """A render ran past its time budget."""


@contextmanager
def render_budget(seconds: float) -> Iterator[None]:
    """Let renders in this thread run for `seconds` (each loop checks); 0 means no limit."""
    previous = getattr(_budget, "deadline", None)
    _budget.deadline, _budget.seconds = (
        (time.monotonic() + seconds, seconds)
        if seconds
        else (
            None,
            0.0,
        )
    )
    try:
        yield
    finally:
        _budget.deadline = previous


def _too_large(what: str) -> SecurityError:
    return SecurityError(f"the result of {what} would be too large for a message")


def _safe_range(*args: int) -> range:
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise _too_large(f"range() ({len(items)} items, at most {MAX_RANGE})")
    return items


class MailerSandbox(SandboxedEnvironment):
    """The sandbox, with a fast path for the fields of our own context views.

    Those views are frozen dataclasses of plain data (str, int, tuples of str), so reading a
    declared field is safe; the generic check costs ~1 µs per look-up and a message does ~40.
    Everything else (methods of those values, anything unknown) takes the sandbox's full path.
    """

    #: Sent through call_binop at render time, and so never folded at compile time.
    intercepted_binops = frozenset({"**", "*", "+", "%"})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.globals["range"] = _safe_range
        for name, check in _FILTER_CHECKS.items():
            self.filters[name] = _checked_filter(self.filters[name], check)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Calls from a template, with str methods that take a size checked first."""
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            _check_str_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        if _is_sequence(result) and len(result) > MAX_SEQUENCE:
            raise _too_large(f"that call ({len(result)} items, at most {MAX_SEQUENCE})")
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        allowed = _VIEW_FIELDS.get(type(obj))
        if allowed is not None and attribute in allowed:
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """`**`, `*`, `+` and `%` with their results' sizes checked before computing."""
        if operator == "**":
            _check_power(left, right)
        elif operator == "*":
            _check_product(left, right)
        elif operator == "+" and _is_sequence(left) and _is_sequence(right):
            if len(left) + len(right) > MAX_SEQUENCE:
                raise _too_large(f"joining {len(left)} and {len(right)} items")
        elif operator == "%" and isinstance(left, str) and _WIDE_FORMAT.search(left):
            raise _too_large("a % format with a width of 10,000 or more")
        result = super().call_binop(context, operator, left, right)
        if _is_sequence(result) and len(result) > MAX_SEQUENCE:
            raise _too_large(f"{operator} ({len(result)} items, at most {MAX_SEQUENCE})")
        return result

    def budgeted(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """What every `for` loop of a template iterates: `iterable`, checking the time budget
        on the first item and every 256th."""
        deadline = getattr(_budget, "deadline", None)
        for n, item in enumerate(iterable):
            if deadline is not None and not n & 255 and time.monotonic() > deadline:
                raise RenderTimeout(
                    f"rendering took longer than {_budget.seconds:g} s "
                    "(MAILER_TEMPLATE_RENDER_BUDGET_S); look for loops over long text or lists"
                )
            yield item

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        with _nesting_limits(name, filename):
            tree = super()._parse(source, name, filename)
            for loop in tree.find_all(nodes.For):
                loop.iter = nodes.Call(
                    nodes.EnvironmentAttribute("budgeted"), [loop.iter], [], None, None
                ).set_lineno(loop.iter.lineno)
        return tree

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        with _nesting_limits(name, filename):
            return super()._generate(source, name, filename, defer_init=defer_init)

    def _compile(self, source: str, filename: str) -> CodeType:
        with _nesting_limits(None, filename):
            return super()._compile(source, filename)


@contextmanager
def _nesting_limits(name: str | None, filename: str | None) -> Iterator[None]:
    """Python's limits on nesting, met by a template nested a few hundred deep (recursion in
    Jinja's parser and code generator, indentation and nested blocks in the Python it makes),
    as the template's own syntax error, which every check reports with the fix."""
    try:
        yield
    except (RecursionError, SyntaxError) as exc:
        message = "blocks or brackets are nested too deeply; flatten the template"
        raise TemplateSyntaxError(message, 1, name, filename) from exc


#: `str.format` fields with a width or precision of 10,000 or more.
_WIDE_FIELD = re.compile(r"\{[^{}]*:[^{}]*?(\d{5,}|\{)")


def _size(value: Any) -> int:
    return len(value) if _is_sequence(value) else 0


def _check_width(width: Any, what: str) -> None:
    if isinstance(width, int) and width > MAX_SEQUENCE:
        raise _too_large(f"{what} to a width of {width}")


def _check_str_method(text: str, name: str, args: tuple[Any, ...], kwargs: dict) -> None:
    if name in ("ljust", "rjust", "center", "zfill") and args:
        _check_width(args[0], name)
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tabsize, int) and tabsize * text.count("\t") > MAX_SEQUENCE:
            raise _too_large("expandtabs")
    elif name == "replace" and len(args) >= 2:
        _check_replace(text, args[0], args[1], args[2] if len(args) > 2 else -1)
    elif name == "join" and args:
        _check_join(text, args[0])
    elif name in ("format", "format_map") and _WIDE_FIELD.search(text):
        raise _too_large("a format field with a width of 10,000 or more")


def _check_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str) and old:
        times = text.count(old)
        if isinstance(count, int) and count >= 0:
            times = min(times, count)
        if len(text) + times * (len(new) - len(old)) > MAX_SEQUENCE:
            raise _too_large("that replace")


def _check_join(separator: Any, items: Any) -> None:
    if isinstance(items, list | tuple):
        total = sum(len(str(item)) for item in items[: MAX_SEQUENCE + 1])
        if total + len(str(separator)) * max(len(items) - 1, 0) > MAX_SEQUENCE:
            raise _too_large("that join")


def _check_center(value: Any, width: Any = 80, *_: Any, **__: Any) -> None:
    _check_width(width, "center")


def _check_indent(value: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    if isinstance(width, str):
        width = len(width)
    if isinstance(width, int) and width * (str(value).count("\n") + 1) > MAX_SEQUENCE:
        raise _too_large(f"indent by {width}")


def _check_replace_filter(_ctx: Any, text: Any, old: Any, new: Any, count: Any = None) -> None:
    _check_replace(str(text), old, new, -1 if count is None else count)


def _check_format(value: Any, *_: Any, **__: Any) -> None:
    if isinstance(value, str) and _WIDE_FORMAT.search(value):
        raise _too_large("a % format with a width of 10,000 or more")


def _check_join_filter(_ctx: Any, value: Any, d: Any = "", *_: Any, **__: Any) -> None:
    _check_join(d, list(value) if isinstance(value, list | tuple) else value)


#: Built-in filters that take a size, and the check each gets before it runs.
_FILTER_CHECKS = {
    "center": _check_center,
    "indent": _check_indent,
    "replace": _check_replace_filter,
    "format": _check_format,
    "join": _check_join_filter,
}


def _checked_filter(original: Any, check: Any) -> Any:
    @functools.wraps(original)  # keeps jinja's pass_eval_context marker
    def checked(*args: Any, **kwargs: Any) -> Any:
        check(*args, **kwargs)
        result = original(*args, **kwargs)
        if _size(result) > MAX_SEQUENCE:
            raise _too_large(f"that filter ({_size(result)} items, at most {MAX_SEQUENCE})")
        return result

    return checked


def _is_sequence(value: Any) -> bool:
    return isinstance(value, str | list | tuple)


def _check_power(base: Any, exponent: Any) -> None:
    is_int = isinstance(base, int) and isinstance(exponent, int)
    if is_int and abs(base) > 1 and abs(base).bit_length() * exponent > MAX_INT_BITS:
        raise _too_large(f"{base} ** {exponent}")


def _check_product(left: Any, right: Any) -> None:
    if _is_sequence(left) and isinstance(right, int):
        left, right = right, left
    if isinstance(left, int) and _is_sequence(right):
        if left * len(right) > MAX_SEQUENCE:
            raise _too_large(f"repeating {len(right)} items {left} times")
    elif (
        isinstance(left, int)
        and isinstance(right, int)
        and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS
    ):
        raise _too_large("that multiplication")


def _autoescape(name: str | None) -> bool:
    # Compiled names end in .html for the HTML part; text parts and subjects are never escaped.
    return bool(name) and str(name).endswith((".html", ".htm"))


@lru_cache(maxsize=8)
def make_environment(templates_dir: Path) -> MailerSandbox:
    """The sandboxed environment for one templates directory (shared by every campaign)."""
    return MailerSandbox(
        loader=FileSystemLoader(str(templates_dir)),
        autoescape=_autoescape,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,
    )


def compile_source(
    env: SandboxedEnvironment, source: str | nodes.Template, name: str, filename: str
) -> Template:
    """Compile `source` (text, or a tree parsed from it) as if it were the file `name`: the
    name picks autoescaping, the filename is what tracebacks (and so our error lines) refer to."""
    code = env.compile(source, name=name, filename=filename)
    return env.template_class.from_code(env, code, env.make_globals(None))
