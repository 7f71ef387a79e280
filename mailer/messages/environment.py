"""The one Jinja2 environment every template is compiled in: sandboxed, strict, autoescaped HTML."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, Template
from jinja2.sandbox import SandboxedEnvironment


def _autoescape(name: str | None) -> bool:
    # Compiled names end in .html for the HTML part; text parts and subjects are never escaped.
    return bool(name) and str(name).endswith((".html", ".htm"))


@lru_cache(maxsize=8)
def make_environment(templates_dir: Path) -> SandboxedEnvironment:
    """The sandboxed environment for one templates directory (shared by every campaign)."""
    return SandboxedEnvironment(
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
