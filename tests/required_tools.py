"""Programs some tests need (Postfix's smtp-sink, Debian's chromium): a skip on a laptop,
a failure where `scripts/test` was supposed to install them (as root, or in CI).

A green run must not depend on what happened to be installed: `scripts/test` run as root
installs every program below, so missing one there is a broken set-up, not a reason to skip.
"""

from __future__ import annotations

import os
import shutil

import pytest

#: Program → the Debian package that provides it (what `scripts/test` installs).
PACKAGES = {"/usr/sbin/smtp-sink": "postfix", "/usr/bin/chromium": "chromium"}


def must_not_skip() -> bool:
    """As root or in CI every tool is there to be had: skips would hide a broken set-up."""
    return os.geteuid() == 0 or bool(os.environ.get("CI"))


def require(program: str) -> None:
    """Skip (laptop) or fail (root, CI) the calling test when `program` is missing."""
    if shutil.which(program) is not None:
        return
    package = PACKAGES[program]
    reason = f"{program} is missing: install the Debian package {package} (scripts/test does)"
    if must_not_skip():
        pytest.fail(f"{reason}; as root or in CI no test may be skipped", pytrace=False)
    pytest.skip(reason)
