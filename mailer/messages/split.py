"""Render once per campaign, substitute per recipient (docs/performance.md §3, lever 8).

Most of a message does not depend on its recipient. `split_source` compiles one template source
into two sandboxed templates:

- the **campaign part** is the template with every recipient-dependent output replaced by a
  marker; it is rendered once per campaign (`SplitTemplate.bind`), giving constant text with
  the markers in it;
- the **recipient part** keeps only what depends on the recipient: each such `{{ expression }}`,
  each `{% if %}` whose test does (yielding "1" or "0" for the branch taken), and the campaign
  `{% if %}`/`{% for %}`/`{% set %}` around them, so it reaches them exactly as the full
  template would. Per message it yields one item per marker, in order; the constant text and
  those items are joined (`BoundSplit.render`).

Both parts are compiled by the same sandboxed environment from the same source, under the same
name, so each expression is evaluated by the sandbox and escaped exactly as in the full render
(`tests/test_split.py` compares the two byte for byte). A template the split cannot prove
equivalent (a loop over recipient data, macros, filter or call blocks, `{% autoescape %}`,
the `random` filter) gets `None`, and the builder renders it whole for every message.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Template as JinjaTemplate
from jinja2 import nodes
from jinja2.runtime import new_context
from jinja2.sandbox import SandboxedEnvironment

from mailer.messages.context import RECIPIENT_VIEWS
from mailer.messages.environment import compile_source

_log = logging.getLogger(__name__)

#: Statements the split does not reason about: a template using any of them renders whole.
_UNSUPPORTED = (
    nodes.Macro,
    nodes.CallBlock,
    nodes.FilterBlock,
    nodes.AssignBlock,
    nodes.With,
    nodes.Scope,
    nodes.OverlayScope,
    nodes.EvalContextModifier,
    nodes.Block,
    nodes.Extends,
    nodes.Include,
    nodes.Import,
    nodes.FromImport,
    nodes.ExprStmt,
    nodes.NSRef,
)
#: Filters whose result differs between two evaluations: rendering once would change them.
_NONDETERMINISTIC_FILTERS = frozenset({"random", "shuffle"})
#: A message body's line end (RFC 5322 §2.3).
CRLF = b"\r\n"

_VALUE, _IF, _ELSE, _END = "v", "i", "e", "n"
_TAKEN, _NOT_TAKEN = "1", "0"

#: One step of a bound program: constant text, a value (None), or a branch (then, else).
Program = list[Any]


class _Unsplittable(Exception):
    """The template uses something the split does not handle; render it whole."""


@dataclass(frozen=True)
class SplitTemplate:
    """A template compiled as a campaign part and a recipient part (see the module doc)."""

    campaign: JinjaTemplate
    recipient: JinjaTemplate
    marker: str  #: the random text around each marker in the campaign part's output
    has_loops: bool  #: the recipient part has `for` loops (so it needs the render budget)

    def bind(self, shared: Mapping[str, Any]) -> BoundSplit | None:
        """Render the campaign part with the campaign's context; None if that fails (the
        builder then renders whole, so a bad expression fails each message as it always
        did) or if the output is not what the recipient part expects."""
        try:
            text = "".join(
                self.campaign.root_render_func(self.campaign.new_context(dict(shared), True))
            )
            program = _parse(text, self.marker)
        except Exception as exc:  # any failure: the full render reports it per message
            _log.debug("rendering %s whole: %s", self.campaign.name, exc)
            return None
        return BoundSplit(self.recipient, program, self.has_loops)


class BoundSplit:
    """One campaign's constant text for a template part, ready to take recipients' values."""

    def __init__(self, recipient: JinjaTemplate, program: Program, has_loops: bool) -> None:
        self.environment = recipient.environment
        self._render_func = recipient.root_render_func
        self._name, self._blocks = recipient.name, recipient.blocks
        self.program = program
        self.has_loops = has_loops
        #: See `line_bounds`.
        self.longest_line, self.fewest_octets = line_bounds(program)
        # The program again with its constant text as message-body bytes, for `render_body`;
        # None when that text holds a CR (from a campaign value), which `crlf_body` treats
        # together with the characters around it.
        self._body_program = (
            None if any("\r" in chunk for chunk in _chunks(program)) else _as_body(program)
        )
        # Each message's jinja Context is a copy of this one with its own parent and vars:
        # making one anew builds an EvalContext (calling the autoescape check) and four
        # containers, ~10 % of a message. What the copies share is never written while the
        # recipient part runs: `eval_ctx` only by `{% autoescape %}`, `blocks` only by blocks,
        # includes and imports, all of which the split refuses (`_UNSUPPORTED`).
        self._context_class = self.environment.context_class
        self._context_state = vars(
            new_context(self.environment, self._name, self._blocks, {}, True)
        )

    def render(self, ctx: dict[str, Any]) -> str:
        """The part for one recipient, the same text the full template renders."""
        out: list[Any] = []
        self._fill(self.program, ctx, out, [])
        return "".join(out)

    def render_body(self, ctx: dict[str, Any]) -> bytes:
        """`crlf_body(self.render(ctx))`, with only the recipient's values encoded per message:
        UTF-8-encoding a whole part of non-ASCII text costs more than rendering it."""
        if self._body_program is None:
            return crlf_body(self.render(ctx))
        out: list[Any] = []
        values: list[int] = []
        self._fill(self._body_program, ctx, out, values)
        for n in values:
            value = out[n]
            if "\r" in value:  # a CR pairs with the LF after it, even in the next piece:
                # render the text again (the split refuses `random`, so it is the same text)
                return crlf_body(self.render(ctx))
            out[n] = value.encode().replace(b"\n", CRLF) if "\n" in value else value.encode()
        return b"".join(out)

    def _fill(
        self, program: Program, ctx: dict[str, Any], out: list[Any], values: list[int]
    ) -> None:
        """Run `program` with this recipient's items into `out`, noting where values went."""
        # the template's own new_context with shared=True (`ctx` is the parent, as is)
        context = object.__new__(self._context_class)
        context.__dict__ = {
            **self._context_state,
            "parent": ctx,
            "vars": {},
            "exported_vars": set(),
        }
        items = self._render_func(context)
        try:
            _run(program, items, out, values)
        except StopIteration:
            raise RuntimeError(
                "the recipient part yielded less than the campaign part marks"
            ) from None
        if next(items, None) is not None:
            raise RuntimeError("the recipient part yielded more than the campaign part marks")


def _run(program: Program, items: Iterator[str], out: list[Any], values: list[int]) -> None:
    for step in program:
        if step is None:
            values.append(len(out))
            out.append(next(items))
        elif step.__class__ is tuple:
            _run(step[0] if next(items) == _TAKEN else step[1], items, out, values)
        else:
            out.append(step)


def crlf_body(text: str) -> bytes:
    """A part's text as UTF-8 with CRLF line ends and no bare CR or LF (RFC 5322 §2.3)."""
    body = text.encode("utf-8")
    if b"\r" in body:  # only data can bring a CR; the templates' own line ends are LF
        body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return body.replace(b"\n", CRLF)


def _as_body(program: Program) -> Program:
    """`program` with each constant as `crlf_body` gives it (the program holds no CR)."""
    return [_step_as_body(step) for step in program]


def _step_as_body(step: Any) -> Any:
    if step is None:  # a recipient's value: encoded per message
        return None
    if step.__class__ is tuple:  # a branch: both ways
        return (_as_body(step[0]), _as_body(step[1]))
    return crlf_body(step)


def line_bounds(program: Program) -> tuple[int, int]:
    """(longest line, fewest octets) of the constant text as UTF-8 with CRLF line ends, the
    values left out, on every path through the branches, each branch's line breaks counted
    as text. Every line of a part rendered from `program` is then at most
    `longest + len(part) - fewest` octets: its constant pieces lie within one such line, and
    its values are at most what the part holds beyond the constant text.
    A CR in the constant text (from a campaign parameter) makes the bound unusable: (∞, 0)."""
    if any("\r" in chunk for chunk in _chunks(program)):
        return 1 << 62, 0
    longest = current = fewest = 0
    for step in program:
        if step.__class__ is tuple:
            most, least = _branch_octets(step)
            current += most
            fewest += least
        elif step is not None:
            lines = step.split("\n")
            fewest += len(step.encode()) + len(lines) - 1
            current += len(lines[0].encode())
            for line in lines[1:]:
                longest = max(longest, current)
                current = len(line.encode())
    return max(longest, current), fewest


def _branch_octets(branch: tuple[Program, Program]) -> tuple[int, int]:
    """(most, fewest) octets of constant text a branch can add, CRLF counted as two."""
    sizes = []
    for steps in branch:
        most = least = 0
        for step in steps:
            if step.__class__ is tuple:
                inner = _branch_octets(step)
                most, least = most + inner[0], least + inner[1]
            elif step is not None:
                size = len(step.encode()) + step.count("\n")
                most, least = most + size, least + size
        sizes.append((most, least))
    return max(sizes[0][0], sizes[1][0]), min(sizes[0][1], sizes[1][1])


def _chunks(program: Program) -> Iterator[str]:
    for step in program:
        if step.__class__ is tuple:
            yield from _chunks(step[0])
            yield from _chunks(step[1])
        elif step is not None:
            yield step


def _parse(text: str, marker: str) -> Program:
    """The campaign part's output as a program: text, values and (then, else) branches."""
    pieces = re.split(f"\0{marker}([{_VALUE}{_IF}{_ELSE}{_END}])\0", text)
    stack: list[tuple[Program, list[Program]]] = []
    program: Program = []
    for n, piece in enumerate(pieces):
        if n % 2 == 0:
            if piece:
                program.append(piece)
        elif piece == _VALUE:
            program.append(None)
        elif piece == _IF:
            stack.append((program, []))
            program = []
        elif piece == _ELSE and stack and not stack[-1][1]:
            stack[-1][1].append(program)
            program = []
        elif piece == _END and stack and len(stack[-1][1]) == 1:
            outer, (then,) = stack.pop()
            outer.append((then, program))
            program = outer
        else:
            raise ValueError(f"unbalanced branch markers in the campaign part ({piece!r})")
    if stack:
        raise ValueError("a branch marker was left open in the campaign part")
    return program


def split_source(
    env: SandboxedEnvironment, source: str, name: str, filename: str
) -> SplitTemplate | None:
    """Compile `source` (as `name`, see `compile_source`) split in two; None when the template
    must be rendered whole for every message."""
    try:
        first = env.parse(source, name=name, filename=filename)
        tainted = _tainted_names(first)
        marker = secrets.token_hex(8)
        campaign = nodes.Template(_Splitter(tainted, marker, "campaign").body(first.body))
        second = env.parse(source, name=name, filename=filename)
        recipient = nodes.Template(_Splitter(tainted, marker, "recipient").body(second.body))
    except _Unsplittable as exc:
        _log.debug("%s renders whole: %s", filename, exc)
        return None
    for tree, lineno in ((campaign, first.lineno), (recipient, second.lineno)):
        tree.set_lineno(lineno or 1).set_environment(env)
    return SplitTemplate(
        campaign=compile_source(env, campaign, name, filename),
        recipient=compile_source(env, recipient, name, filename),
        marker=marker,
        has_loops=any(True for _ in recipient.find_all(nodes.For)),
    )


def _names(node: nodes.Node) -> set[str]:
    found = [node, *node.find_all(nodes.Name)] if isinstance(node, nodes.Name) else []
    found = found or list(node.find_all(nodes.Name))
    return {n.name for n in found if isinstance(n, nodes.Name)}


def _check_supported(tree: nodes.Template) -> None:
    for node in tree.find_all(_UNSUPPORTED):
        raise _Unsplittable(f"uses {type(node).__name__}")
    for loop in tree.find_all(nodes.For):
        if loop.recursive:
            raise _Unsplittable("has a recursive loop")
    for node in tree.find_all(nodes.Filter):
        if node.name in _NONDETERMINISTIC_FILTERS:
            raise _Unsplittable(f"uses the {node.name} filter")
    for node in tree.find_all(nodes.Assign):
        target = node.target
        parts = target.items if isinstance(target, nodes.Tuple) else [target]
        if not all(isinstance(part, nodes.Name) for part in parts):
            raise _Unsplittable(f"line {node.lineno} assigns to something other than names")


def _tainted_names(tree: nodes.Template) -> frozenset[str]:
    """The recipient views and every variable set from them, or set inside a branch taken
    per recipient (the value then depends on the recipient even if the expression does not)."""
    _check_supported(tree)
    tainted = set(RECIPIENT_VIEWS)

    def walk(body: list[nodes.Node], in_branch: bool) -> None:
        for node in body:
            if isinstance(node, nodes.Assign):
                if in_branch or _names(node.node) & tainted:
                    tainted.update(_names(node.target))
            elif isinstance(node, nodes.If):
                branch = in_branch or bool(_names(node.test) & tainted)
                walk(node.body, branch)
                for elif_ in node.elif_:
                    branch = branch or bool(_names(elif_.test) & tainted)
                    walk(elif_.body, branch)
                walk(node.else_, branch)
            elif isinstance(node, nodes.For):
                walk(node.body, in_branch)
                walk(node.else_, in_branch)

    while True:
        before = len(tainted)
        walk(tree.body, False)
        if len(tainted) == before:
            return frozenset(tainted)


class _Splitter:
    """Turns a parsed template body into its campaign part or its recipient part."""

    def __init__(self, tainted: frozenset[str], marker: str, part: str) -> None:
        self.tainted = tainted
        self.marker = marker
        self.is_campaign = part == "campaign"

    def depends(self, node: nodes.Node) -> bool:
        return bool(_names(node) & self.tainted)

    def mark(self, kind: str, lineno: int) -> nodes.Output:
        return nodes.Output([nodes.TemplateData(f"\0{self.marker}{kind}\0")], lineno=lineno)

    def body(self, body: list[nodes.Node]) -> list[nodes.Node]:
        out: list[nodes.Node] = []
        for node in body:
            if isinstance(node, nodes.Output):
                out.extend(self.output(node))
            elif isinstance(node, nodes.If):
                out.extend(self.branch(_nested(node)))
            elif isinstance(node, nodes.For):
                if self.depends(node.iter) or (node.test is not None and self.depends(node.test)):
                    raise _Unsplittable(f"line {node.lineno} loops over recipient data")
                node.body, node.else_ = self.body(node.body), self.body(node.else_)
                if self.is_campaign or node.body or node.else_:
                    out.append(node)
            elif isinstance(node, nodes.Assign):
                # A campaign variable may be read by a recipient expression, so the recipient
                # part keeps every assignment; the campaign part only those it can evaluate.
                if not (self.is_campaign and _names(node.target) & self.tainted):
                    out.append(node)
            else:
                raise _Unsplittable(f"line {node.lineno}: {type(node).__name__}")
        return out

    def output(self, node: nodes.Output) -> list[nodes.Node]:
        if not self.is_campaign:
            # one Output per expression: each yields exactly one item (no TemplateData here)
            return [
                nodes.Output([child], lineno=child.lineno)
                for child in node.nodes
                if not isinstance(child, nodes.TemplateData) and self.depends(child)
            ]
        children = [
            nodes.TemplateData(f"\0{self.marker}{_VALUE}\0")
            if not isinstance(child, nodes.TemplateData) and self.depends(child)
            else child
            for child in node.nodes
        ]
        return [nodes.Output(children, lineno=node.lineno)]

    def branch(self, node: nodes.If) -> list[nodes.Node]:
        then, else_ = self.body(node.body), self.body(node.else_)
        line = node.lineno
        if not self.depends(node.test):
            if self.is_campaign or then or else_:
                return [nodes.If(node.test, then, [], else_, lineno=line)]
            return []
        if self.is_campaign:
            return [
                self.mark(_IF, line),
                *then,
                self.mark(_ELSE, line),
                *else_,
                self.mark(_END, line),
            ]
        taken = nodes.Output([nodes.TemplateData(_TAKEN)], lineno=line)
        not_taken = nodes.Output([nodes.TemplateData(_NOT_TAKEN)], lineno=line)
        return [nodes.If(node.test, [taken, *then], [], [not_taken, *else_], lineno=line)]


def _nested(node: nodes.If) -> nodes.If:
    """`if a … elif b … else …` as `if a … else (if b … else …)`: the same choice."""
    else_ = node.else_
    for elif_ in reversed(node.elif_):
        else_ = [nodes.If(elif_.test, elif_.body, [], else_, lineno=elif_.lineno)]
    return nodes.If(node.test, node.body, [], else_, lineno=node.lineno)
