"""The one Jinja2 environment every template is compiled in: sandboxed, strict, autoescaped HTML.

The sandbox also bounds what a template can cost: `**`, `*`, `+` and `%` refuse results larger
than a message could use (checked before computing, so `9**(9**10)` is refused at once and
never folded at compile time), and every `for` loop checks the render's time budget
(`render_budget`), so nested loops over long text fail the message instead of the worker.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template, nodes
from jinja2.exceptions import SecurityError
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
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(
                nodes.EnvironmentAttribute("budgeted"), [loop.iter], [], None, None
            ).set_lineno(loop.iter.lineno)
        return tree


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


def compile_source(env: SandboxedEnvironment, source: str, name: str, filename: str) -> Template:
    """Compile `source` as if it were the file `name`: the name picks autoescaping, the
    filename is what tracebacks (and so our error lines) refer to."""
    code = env.compile(source, name=name, filename=filename)
    return env.template_class.from_code(env, code, env.make_globals(None))
