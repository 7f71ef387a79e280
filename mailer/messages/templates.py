"""Template files: the header, the static check against the allowlisted context, compiling.

A template is `templates/<category>/<name>.html` (content only: the layout is added by code, so
the compliance footer cannot be left out) with an optional `<name>.txt` sibling; without one the
text part is derived from the HTML. The HTML file starts with a Jinja comment header:

    {#
    subject: Open enrollment for {{ organization.name }} starts November 1
    category: promotions
    params: deadline, webinar_url
    #}

`params:` (optional) declares the campaign parameters the template reads as
`{{ params.deadline }}`: every campaign with this template must give each one
(`mailer campaign create … --param deadline="October 15"`), and the static check refuses a
template that reads an undeclared one, or a campaign that gives one the template does not declare.
"""

from __future__ import annotations

import difflib
import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from jinja2 import Template as JinjaTemplate
from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from mailer.config import Settings
from mailer.enums import Category
from mailer.errors import TemplateCheckError, TemplateError
from mailer.messages import containment, sources
from mailer.messages.context import CONTEXT_VIEWS, view_fields
from mailer.messages.environment import compile_source, make_environment
from mailer.messages.lint import lint_content
from mailer.messages.sources import Composite, Piece
from mailer.messages.split import SplitTemplate, split_source

LAYOUT = "layouts/base"
#: What the layout's footer prints; each must stay visible in the HTML whatever the template.
FOOTER_OUTPUTS = ("{{ company.postal_address }}", "{{ links.unsubscribe }}", "{{ links.policy }}")
HEADER = re.compile(r"\A\{#(.*?)#\}", re.S)
_HEADER_KEYS = ("subject", "category")
_OPTIONAL_HEADER_KEYS = ("params",)
#: The context name under which a template reads its declared campaign parameters.
PARAMS = "params"
_PARAM_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


@dataclass(frozen=True)
class Template:
    """A loaded template: compiled once, used for every message of a campaign."""

    name: str
    category: Category
    subject_source: str
    html: JinjaTemplate
    text: JinjaTemplate
    subject: JinjaTemplate
    is_text_derived: bool
    composites: dict[str, Composite]  #: by compiled filename, to map error lines back
    #: Campaign parameters the header declares (`params: a, b`), in order.
    params: tuple[str, ...] = ()
    #: The same parts split for rendering once per campaign (`split.py`); None: render whole.
    subject_split: SplitTemplate | None = None
    text_split: SplitTemplate | None = None
    html_split: SplitTemplate | None = None

    def error(self, part: str, exc: Exception) -> TemplateError:
        """A TemplateError naming the original file and line of a render failure."""
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            composite = self.composites.get(frame.filename)
            if composite and frame.lineno:
                origin = composite.origin(frame.lineno)
                if origin:
                    return TemplateError(origin[0], f"{part}: {exc}", origin[1])
        return TemplateError(self.name, f"{part}: {exc}")


def list_templates(settings: Settings) -> list[str]:
    """Every template name (`category/name`) under the templates directory, sorted."""
    root = Path(settings.templates_dir)
    names: list[str] = []
    for category in Category:
        folder = root / category.value
        names.extend(f"{category.value}/{p.stem}" for p in folder.glob("*.html"))
    return sorted(names)


@dataclass(frozen=True)
class TemplateSource:
    """What a template is made of, wherever it is kept: a file pair under `templates/` or a
    version stored in the database. Compiled once by `compile_template`."""

    name: str
    category: Category
    subject: str
    html: str
    #: None: the text part is derived from the HTML.
    text: str | None
    params: tuple[str, ...] = ()
    #: Where errors point: the file (or stored part) and the line the subject is on.
    html_file: str = ""
    text_file: str = ""
    subject_file: str = ""
    subject_line: int = 1


def read_template_source(settings: Settings, name: str) -> TemplateSource:
    """The built-in template `name` (`category/name`) as read from its files."""
    root = Path(settings.templates_dir)
    html_path, text_path = root / f"{name}.html", root / f"{name}.txt"
    html_file = str(html_path)
    if not html_path.is_file():
        raise TemplateError(
            html_file, f"no such template {name!r}; `mailer template list` shows what exists"
        )
    html_source = html_path.read_text(encoding="utf-8")
    header, header_line = read_header(html_source, html_file)
    category = _category(header, name, html_file)
    params = declared_params(header.get("params", ""), html_file, header_line.get("params", 1))
    has_text = text_path.is_file()
    return TemplateSource(
        name=name,
        category=category,
        subject=header["subject"],
        html=html_source,
        text=text_path.read_text(encoding="utf-8") if has_text else None,
        params=params,
        html_file=html_file,
        text_file=str(text_path),
        subject_file=html_file,
        subject_line=header_line.get("subject", 1),
    )


def load_template(settings: Settings, name: str, *, subject: str = "") -> Template:
    """Read, check and compile a built-in template with the layout; TemplateError names file
    and line. `subject` (a campaign's own subject) replaces the template's."""
    return compile_template(settings, read_template_source(settings, name), subject=subject)


def compile_template(settings: Settings, source: TemplateSource, *, subject: str = "") -> Template:
    """Check `source` against the allowlisted context and compile it with the layout, once.

    Every problem of the static check is collected (TemplateCheckError.problems); the first
    is the error's message. `subject`, when given, replaces the template's subject.
    """
    env = make_environment(Path(settings.templates_dir))
    root = Path(settings.templates_dir)
    name, params = source.name, source.params
    html_file = source.html_file or f"{name}.html"
    subject_file, subject_line = source.subject_file or f"{name}.subject", source.subject_line
    if subject.strip():
        source = replace(source, subject=subject.strip())
        subject_file, subject_line = "campaign subject", 1
    problems = source_problems(env, source.html, html_file, params=params)
    problems += source_problems(
        env, source.subject, subject_file, first_line=subject_line, params=params
    )
    has_text = source.text is not None
    text_piece = (
        Piece(source.text or "", source.text_file or f"{name}.txt")
        if has_text
        else sources.html_to_text(Piece(source.html, html_file))
    )
    if has_text:
        problems += source_problems(env, text_piece.text, text_piece.file, params=params)
    if problems:
        raise TemplateCheckError(problems)

    lint_content(source.category, html_file, source.subject, [source.html, text_piece.text])
    layout_html, layout_text = _read_layout(env, root)
    content = containment.contain_content(Piece(source.html, html_file))
    html_comp = sources.inline_css(
        sources.around_content(layout_html.text, layout_html.file, content)
    )
    containment.check_footer_visible(html_comp, FOOTER_OUTPUTS, html_file)
    text_comp = sources.compose(
        sources.around_content(layout_text.text, layout_text.file, text_piece)
    )
    subject_comp = Composite(source.subject, {1: (subject_file, subject_line)})
    composites = {
        f"<{name}.html>": html_comp,
        f"<{name}.txt>": text_comp,
        f"<{name}.subject>": subject_comp,
    }
    compiled, splits = {}, {}
    for filename, comp in composites.items():
        try:
            compiled[filename] = compile_source(env, comp.source, filename[1:-1], filename)
        except TemplateSyntaxError as exc:
            origin = comp.origin(exc.lineno or 1) or (name, exc.lineno)
            raise TemplateError(origin[0], exc.message or str(exc), origin[1]) from exc
        splits[filename] = split_source(env, comp.source, filename[1:-1], filename)
    return Template(
        name=name,
        category=source.category,
        subject_source=source.subject,
        html=compiled[f"<{name}.html>"],
        text=compiled[f"<{name}.txt>"],
        subject=compiled[f"<{name}.subject>"],
        is_text_derived=not has_text,
        composites=composites,
        params=params,
        subject_split=splits[f"<{name}.subject>"],
        text_split=splits[f"<{name}.txt>"],
        html_split=splits[f"<{name}.html>"],
    )


def check_params(template: Template, given: Mapping[str, object]) -> None:
    """A campaign's parameters against what its template declares: none unknown, none missing.

    A policy notice's parameters come from the policy version it announces, not from a person,
    so they are not checked here.
    """
    if template.category is Category.POLICY:
        return
    declared = template.params
    for name in given:
        if name in declared:
            continue
        close = difflib.get_close_matches(name, declared, n=1)
        if close:
            hint = f"did you mean {close[0]!r}?"
        elif declared:
            hint = f"it declares {', '.join(declared)}"
        else:
            hint = "it declares none (a template reads one after `params: NAME` in its header)"
        raise TemplateError(template.name, f"unknown campaign parameter {name!r}; {hint}")
    missing = [name for name in declared if not str(given.get(name, "") or "").strip()]
    if missing:
        shown = " ".join(f"--param {name}=…" for name in missing)
        raise TemplateError(
            template.name,
            f"needs the campaign parameter{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}; give {shown}",
        )


def declared_params(raw: str, file: str, line: int) -> tuple[str, ...]:
    names = [part.strip() for part in raw.split(",") if part.strip()]
    for name in names:
        if not _PARAM_NAME.fullmatch(name):
            raise TemplateError(
                file,
                f"params: {name!r} is not a parameter name; use lower-case letters, digits and "
                "_ (e.g. webinar_url), separated by commas",
                line,
            )
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise TemplateError(file, f"params: {duplicated[0]!r} is declared twice", line)
    return tuple(names)


def read_header(source: str, file: str) -> tuple[dict[str, str], dict[str, int]]:
    """The `{# subject: … category: … params: … #}` header's values and their lines."""
    m = HEADER.match(source)
    if not m:
        raise TemplateError(
            file, "the file must start with a {# … #} header giving subject: and category:", 1
        )
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    for offset, raw in enumerate(m.group(1).splitlines()):
        if not raw.strip():
            continue
        key, sep, value = raw.partition(":")
        key = key.strip().lower()
        if not sep or key not in (*_HEADER_KEYS, *_OPTIONAL_HEADER_KEYS):
            raise TemplateError(
                file,
                f"header line {raw.strip()!r}: expected 'subject: …', 'category: …' or 'params: …'",
                1 + offset,
            )
        values[key], lines[key] = value.strip(), 1 + offset
    for key in _HEADER_KEYS:
        if not values.get(key):
            raise TemplateError(file, f"the header has no {key}: line", 1)
    return values, lines


def _category(header: dict[str, str], name: str, file: str) -> Category:
    try:
        category = Category(header["category"])
    except ValueError:
        choices = ", ".join(c.value for c in Category)
        raise TemplateError(
            file, f"unknown category {header['category']!r}; use one of {choices}"
        ) from None
    folder = name.partition("/")[0]
    if folder != category.value:
        raise TemplateError(
            file, f"category {category.value!r} in the header, but the file is in {folder}/"
        )
    return category


def _layout_paths(root: Path) -> tuple[Path, Path]:
    return root / f"{LAYOUT}.html", root / f"{LAYOUT}.txt"


def _read_layout(env: SandboxedEnvironment, root: Path) -> tuple[Piece, Piece]:
    pieces = []
    for path in _layout_paths(root):
        if not path.is_file():
            raise TemplateError(str(path), "the layout is missing")
        text = path.read_text(encoding="utf-8")
        check_source(env, text, str(path))
        pieces.append(Piece(text, str(path)))
    return pieces[0], pieces[1]


def layout_sources(settings: Settings) -> tuple[str | None, ...]:
    """The layout's HTML and text as they are on disk now (None for a missing file), which
    `compile_template` wraps every template in: part of what a compiled template depends on."""
    paths = _layout_paths(Path(settings.templates_dir))
    return tuple(p.read_text(encoding="utf-8") if p.is_file() else None for p in paths)


def check_source(
    env: SandboxedEnvironment,
    source: str,
    file: str,
    first_line: int = 1,
    params: tuple[str, ...] = (),
) -> None:
    """Parse `source` and check every name and field it uses against the allowlisted context
    and the template's declared campaign `params`; raise the first problem."""
    problems = source_problems(env, source, file, first_line, params)
    if problems:
        raise problems[0]


def source_problems(
    env: SandboxedEnvironment,
    source: str,
    file: str,
    first_line: int = 1,
    params: tuple[str, ...] = (),
) -> list[TemplateError]:
    """Every problem `check_source` finds, in source order, each with line, column and fix."""
    try:
        ast = env.parse(source, filename=file)
    except TemplateSyntaxError as exc:
        return [TemplateError(file, exc.message or str(exc), first_line - 1 + (exc.lineno or 1))]
    lines = source.splitlines()
    problems: list[TemplateError] = []

    def fail(message: str, node: nodes.Node, needle: str = "") -> TemplateError:
        text = lines[node.lineno - 1] if 0 < node.lineno <= len(lines) else ""
        # jinja keeps no columns: find the name on its line (`.field` before a bare word)
        dotted = text.find(f".{needle}") if needle else -1
        found = dotted + 1 if dotted >= 0 else (text.find(needle) if needle else -1)
        column = found + 1 if found >= 0 else None
        problem = TemplateError(file, message, first_line - 1 + node.lineno, column)
        problems.append(problem)
        return problem

    _check_structure(ast, fail)
    undeclared = meta.find_undeclared_variables(ast)
    known = [*CONTEXT_VIEWS, PARAMS]
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and name.name in undeclared and name.name not in known:
            fail(_unknown("variable", name.name, known), name, name.name)
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        attr = getattr(node, "attr", None) or getattr(getattr(node, "arg", None), "value", None)
        if not isinstance(attr, str):
            continue
        if attr.startswith("_"):
            fail(f"{attr!r} is not allowed: templates cannot reach Python internals", node, attr)
            continue
        base = getattr(node, "node", None)
        if isinstance(base, nodes.Name) and base.name == PARAMS and base.name in undeclared:
            if attr not in params:
                fail(_unknown_param(attr, params), node, attr)
            continue
        if isinstance(base, nodes.Name) and base.name in CONTEXT_VIEWS and base.name in undeclared:
            allowed = view_fields(base.name)
            if attr not in allowed:
                fail(_unknown("field", f"{base.name}.{attr}", allowed, attr), node, attr)
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))


def _check_structure(
    ast: nodes.Template, fail: Callable[[str, nodes.Node, str], TemplateError]
) -> None:
    """No extends/includes (the layout is ours to add) and no shadowing of context names."""
    for node in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        fail("templates cannot extend or include files: the layout is added for you", node, "")
    for node in ast.find_all((nodes.Assign, nodes.AssignBlock, nodes.For, nodes.Macro)):
        target = node.name if isinstance(node, nodes.Macro) else getattr(node, "target", None)
        names: list[str] = []
        if isinstance(target, str):
            names = [target]
        elif isinstance(target, nodes.Name):
            names = [target.name]
        elif isinstance(target, nodes.Node):
            names = [n.name for n in target.find_all(nodes.Name)]
        for reserved in sorted(set(names) & {*CONTEXT_VIEWS, PARAMS}):
            fail(f"{reserved!r} is part of the context; pick another name", node, reserved)


def _unknown(kind: str, shown: str, allowed: object, lookup: str | None = None) -> str:
    choices = sorted(allowed)  # type: ignore[call-overload]
    close = difflib.get_close_matches(lookup or shown, choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(choices)}"
    return f"unknown {kind} {shown!r}{hint}"


def _unknown_param(name: str, declared: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, declared, n=1)
    if close:
        return f"unknown campaign parameter 'params.{name}'; did you mean 'params.{close[0]}'?"
    line = f"params: {', '.join((*declared, name))}"
    return f"campaign parameter 'params.{name}' is not declared; declare it in the header: {line}"
