"""Reading privacy-policy versions: the current one, one by label, and what changed.

Versions are ordered by their effective date, then by publication (id). The first version is
CPI's policy as published when mailer first ran (`mailer/data/privacy-policy-1.txt`);
`ensure_first_version` puts it in an empty table. Publishing later versions and notifying
clients is `mailer policy publish`'s business, not this module's.
"""

from __future__ import annotations

import datetime as dt
import difflib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.audit import record
from mailer.models import PolicyVersion

FIRST_VERSION_PATH = Path(__file__).parent.parent / "data" / "privacy-policy-1.txt"
FIRST_VERSION_LABEL = "1"
#: The effective date given to version 1. The policy text carries no date of its own and was
#: in force before mailer existed (CPI's policy as published then), so mailer records it from
#: the first day of the year it shipped. A fixed date, not "the day the table was filled", so
#: every installation shows the same history and a later version never predates it.
FIRST_VERSION_EFFECTIVE_ON = dt.date(2026, 1, 1)
FIRST_VERSION_PUBLISHER = "system"


@dataclass(frozen=True)
class DiffLine:
    """One line of a version-to-version diff: kind is `added`, `removed` or `same`."""

    kind: str
    text: str


def _ordered():  # type: ignore[no-untyped-def]
    return select(PolicyVersion).order_by(
        PolicyVersion.effective_on.desc(), PolicyVersion.id.desc()
    )


def current_version(session: Session, today: dt.date | None = None) -> PolicyVersion | None:
    """The version in force on `today` (default: today in UTC), or None if none is yet."""
    today = today or dt.datetime.now(dt.UTC).date()
    return session.scalar(_ordered().where(PolicyVersion.effective_on <= today).limit(1))


def get_version(session: Session, label: str) -> PolicyVersion | None:
    """The version labelled `label` (e.g. "1"), or None."""
    return session.scalar(select(PolicyVersion).where(PolicyVersion.version == label))


def all_versions(session: Session) -> list[PolicyVersion]:
    """Every version, newest first."""
    return list(session.scalars(_ordered()))


def previous_version(session: Session, version: PolicyVersion) -> PolicyVersion | None:
    """The version that `version` replaced, or None for the first one."""
    earlier = (PolicyVersion.effective_on < version.effective_on) | (
        (PolicyVersion.effective_on == version.effective_on) & (PolicyVersion.id < version.id)
    )
    return session.scalar(_ordered().where(earlier).limit(1))


def ensure_first_version(session: Session, *, actor: str = FIRST_VERSION_PUBLISHER) -> bool:
    """Insert version 1 from the shipped text if no version exists; True if it did.

    Safe to call from many processes at once: a concurrent insert of the same label loses on
    the unique constraint and is treated as "already there". Commits nothing itself.
    """
    if session.scalar(select(exists().where(PolicyVersion.id.is_not(None)))):
        return False
    text = FIRST_VERSION_PATH.read_text(encoding="utf-8")
    try:
        with session.begin_nested():
            session.add(
                PolicyVersion(
                    version=FIRST_VERSION_LABEL,
                    effective_on=FIRST_VERSION_EFFECTIVE_ON,
                    text=text,
                    summary="The privacy policy as published when mailer started.",
                    is_material=False,
                    published_by=FIRST_VERSION_PUBLISHER,
                )
            )
    except IntegrityError:
        return False
    record(
        session,
        actor,
        "policy.first_version",
        object_type="policy_version",
        object_id=FIRST_VERSION_LABEL,
        effective_on=FIRST_VERSION_EFFECTIVE_ON.isoformat(),
        source=FIRST_VERSION_PATH.name,
    )
    return True


def diff_lines(old_text: str, new_text: str) -> list[DiffLine]:
    """What changed between two texts, line by line (a paragraph is one line in the policy).

    Unchanged lines are kept so the reader sees each change in place; blank lines are dropped.
    """
    old, new = old_text.splitlines(), new_text.splitlines()
    lines: list[DiffLine] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            lines.extend(DiffLine("same", t) for t in old[i1:i2])
            continue
        lines.extend(DiffLine("removed", t) for t in old[i1:i2])
        lines.extend(DiffLine("added", t) for t in new[j1:j2])
    return [line for line in lines if line.text.strip()]


def changes_from_previous(session: Session, version: PolicyVersion) -> list[DiffLine] | None:
    """The diff from the previous version to `version`, or None if it is the first."""
    previous = previous_version(session, version)
    if previous is None:
        return None
    return diff_lines(previous.text, version.text)
