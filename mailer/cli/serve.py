"""`mailer serve` commands."""

from __future__ import annotations

COMMANDS: list = []
