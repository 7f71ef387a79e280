"""Every error mailer raises on purpose.

MailerError
 ├── ConfigError             a setting is missing or unsafe
 ├── SchemaBehindError       the database needs `mailer db upgrade`
 ├── NotFoundError           a named object does not exist
 ├── PermissionDeniedError   the acting user's role does not allow the action
 ├── ContactImportError      a CSV file cannot be imported (carries every problem)
 │    └── EmployeeDataError  the file carries employee information
 ├── RuleError               an audience rule does not parse or type-check
 ├── TemplateError           a template does not load, check or render
 │    └── TemplateCheckError  its static check failed (carries every problem)
 ├── TokenError              a recipient token is forged, altered or unknown
 ├── CampaignError           a campaign action is not possible in its state
 │    └── CampaignNotCompletedError  a wait ended: cancelled, failed, missed, draft, timeout
 ├── PolicyError             a policy version cannot be published, or its notice not resent
 └── TransientSendError      no SMTP session to send on (refused, timed out, 4xx, login refused)

One recipient's fate is a result, not an exception: a pipelined transaction answers for many
recipients at once, so the transports return a `DeliveryResult` per message (sent, deferred or
failed) and raise only when there is no session to send on at all, which always defers the
messages (the batch is retried later).
"""

from __future__ import annotations

from dataclasses import dataclass


class MailerError(Exception):
    """Base of every error mailer raises on purpose."""


class ConfigError(MailerError):
    """A setting is missing, malformed or unsafe for this environment."""


class SchemaBehindError(MailerError):
    """The database schema is older than this code."""

    def __init__(self, current: str | None, head: str) -> None:
        self.current = current
        self.head = head
        at = f"at revision {current}" if current else "empty"
        super().__init__(
            f"the database schema is behind ({at}, this version needs {head}): "
            "run `mailer db upgrade` first"
        )


class NotFoundError(MailerError):
    """A named object (campaign, user, template, audience) does not exist."""


class PermissionDeniedError(MailerError):
    """The acting user's role does not allow this action."""


@dataclass(frozen=True)
class RowProblem:
    """One bad value in an imported file."""

    row: int  #: 1-based line number in the file, the header being line 1
    column: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}, column {self.column!r}, value {self.value!r}: {self.reason}"


class ContactImportError(MailerError):
    """A contacts file cannot be imported; nothing was written."""

    def __init__(self, path: str, message: str, problems: list[RowProblem] | None = None) -> None:
        self.path = path
        self.problems = problems or []
        super().__init__(f"{path}: {message}")


class EmployeeDataError(ContactImportError):
    """The file has columns that carry employee information; it is refused whole."""


class RuleError(MailerError):
    """An audience rule does not parse or does not type-check."""

    def __init__(
        self,
        message: str,
        *,
        source: str = "<rule>",
        text: str = "",
        line: int = 0,
        column: int = 0,
        suggestion: str | None = None,
    ) -> None:
        self.message = message
        #: The nearest valid field, value or category, when there is one.
        self.suggestion = suggestion
        self.source = source
        self.text = text
        self.line = line
        self.column = column
        super().__init__(self._render())

    def _render(self) -> str:
        if not self.line:
            return f"{self.source}: {self.message}"
        lines = self.text.splitlines() or [""]
        shown = lines[self.line - 1] if 0 < self.line <= len(lines) else ""
        caret = " " * max(self.column - 1, 0) + "^"
        return f"{self.source}:{self.line}:{self.column}: {self.message}\n    {shown}\n    {caret}"


class TemplateError(MailerError):
    """A template does not load, fails its static check, or fails to render."""

    def __init__(
        self, template: str, message: str, line: int | None = None, column: int | None = None
    ) -> None:
        self.template = template
        self.line = line
        self.column = column
        self.message = message
        where = f"{template}, line {line}" if line else template
        if line and column:
            where += f", column {column}"
        super().__init__(f"{where}: {message}")


class TemplateCheckError(TemplateError):
    """A template fails its static check in one or more places: `problems` lists each."""

    def __init__(self, problems: list[TemplateError]) -> None:
        first = problems[0]
        super().__init__(first.template, first.message, first.line, first.column)
        self.problems = list(problems)
        if len(problems) > 1:
            self.args = (f"{self.args[0]} (and {len(problems) - 1} more problems)",)


class TokenError(MailerError):
    """A recipient token is forged, altered or names nobody we know."""


class CampaignError(MailerError):
    """A campaign action is not possible, e.g. launching a completed campaign."""


class CampaignNotCompletedError(CampaignError):
    """A wait for a campaign ended without it completing; `outcome` says how."""

    #: How a wait can end other than completed.
    OUTCOMES = ("cancelled", "failed", "missed", "draft", "timeout")

    def __init__(self, campaign_id: int, outcome: str, message: str) -> None:
        assert outcome in self.OUTCOMES, outcome
        self.campaign_id = campaign_id
        self.outcome = outcome
        super().__init__(message)


class PolicyError(MailerError):
    """A policy version cannot be published (label taken, date too early) or its notice resent."""


class TransientSendError(MailerError):
    """No SMTP session could be opened or kept (refused, timed out, a reply we cannot go past).

    The messages it held are deferred and retried later; `code` and `reply` are the server's
    answer when there was one.
    """

    def __init__(self, message: str, code: int | None = None, reply: str = "") -> None:
        self.code = code
        self.reply = reply
        super().__init__(message)
