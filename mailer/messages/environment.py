"""The one Jinja2 environment every template is compiled in: sandboxed, strict, autoescaped HTML."""

from __future__ import annotations

from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template
from jinja2.sandbox import SandboxedEnvironment

from mailer.messages.context import CONTEXT_VIEWS

#: The public data fields of each context view: the only attributes the fast path serves.
_VIEW_FIELDS = {cls: frozenset(f.name for f in fields(cls)) for cls in CONTEXT_VIEWS.values()}


class MailerSandbox(SandboxedEnvironment):
    """The sandbox, with a fast path for the fields of our own context views.

    Those views are frozen dataclasses of plain data (str, int, tuples of str), so reading a
    declared field is safe; the generic check costs ~1 µs per look-up and a message does ~40.
    Everything else (methods of those values, anything unknown) takes the sandbox's full path.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        allowed = _VIEW_FIELDS.get(type(obj))
        if allowed is not None and attribute in allowed:
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)


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
