"""Privacy-policy versions: publishing them, the notice every client gets, and proof of coverage.

- `text`: reading versions (current, by label, all) and what changed between two;
- `publish`: storing a version and, when material, launching the `policy` notice;
- `coverage`: who was told, per client, and the clients nobody reached;
- `resend`: reaching eligible contacts the notice has not reached, never twice.
"""

from mailer.policy.coverage import ClientCoverage, CoverageReport, coverage, require_version
from mailer.policy.publish import PublishReport, prepare_notice, publish_policy
from mailer.policy.resend import ResendReport, resend_notice
from mailer.policy.text import (
    DiffLine,
    all_versions,
    changes_from_previous,
    current_version,
    ensure_first_version,
    get_version,
    previous_version,
)

__all__ = [
    "ClientCoverage",
    "CoverageReport",
    "DiffLine",
    "PublishReport",
    "ResendReport",
    "all_versions",
    "changes_from_previous",
    "coverage",
    "current_version",
    "ensure_first_version",
    "get_version",
    "prepare_notice",
    "previous_version",
    "publish_policy",
    "require_version",
    "resend_notice",
]
