"""What a command imports before it starts: `mailer policy publish` is on the clock of its first
notice (< 1 s), so the CLI loads each command's module only when it runs, and packages load
their heavy parts on first use (`mailer.lazy`)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click
import pytest

from mailer.cli import COMMAND_MODULES, main

#: What `mailer policy publish` must not import before publishing: other commands, the web
#: app, the delivery engine, the contact importer, rich's tables, email-validator.
NOT_FOR_PUBLISHING = [
    "mailer.cli.campaign",
    "mailer.cli.audience",
    "mailer.cli.users",
    "mailer.web",
    "starlette",
    "mailer.delivery.deliver",
    "mailer.contacts.importer",
    "mailer.contacts.sample",
    "rich",
    "email_validator",
    "mailer.access.users",
    "mailer.access.api_tokens",
]


def test_publishing_imports_only_what_it_needs() -> None:
    # Given a fresh interpreter, when it imports what `mailer policy publish` runs on (the CLI,
    # the policy commands and the wiring that enqueues batches), then none of the rest is loaded
    probe = (
        "import sys, mailer.cli, mailer.cli.policy, workers.actors; "
        f"print([m for m in {NOT_FOR_PUBLISHING!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_command_module_is_imported_with_the_collector_off_and_then_frozen() -> None:
    # Given a fresh interpreter that imported the CLI: nothing heavy yet (the runtime, and
    # with it SQLAlchemy, comes with the command's module)
    probe = (
        "import gc, sys, click; from mailer.cli import main; "
        "light = 'sqlalchemy' not in sys.modules; "
        "gc.callbacks.append(lambda phase, info: phase == 'start' and seen.append(info)); "
        "seen = []; "
        # When a command is looked up, its module imported
        "main.get_command(click.Context(main), 'policy'); "
        "print(light, 'sqlalchemy' in sys.modules, len(seen), gc.isenabled(), "
        "gc.get_freeze_count() > 100_000)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    # Then one collection ran, before the import (of what was there, a few objects), none
    # during it; the collector is on again, and what the import made is frozen
    assert out.stdout.split() == ["True", "True", "1", "True", "True"]


def test_garbage_made_before_a_command_module_is_imported_is_not_frozen_with_it() -> None:
    # Given a process that made a reference cycle and dropped it (as a test suite does)
    probe = (
        "import gc, weakref, click; from mailer.cli import main\n"
        "class Node: pass\n"
        "a, b = Node(), Node(); a.other, b.other = b, a; gone = weakref.ref(a); del a, b\n"
        # When it looks up a command whose module is not imported yet
        "main.get_command(click.Context(main), 'template')\n"
        "gc.collect(); print(gone() is None)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    # Then the cycle was collected, not kept for good among the frozen start-up objects
    assert out.stdout.strip() == "True"


def test_every_command_is_found_in_the_module_the_table_names() -> None:
    for name in COMMAND_MODULES:
        command = main.get_command(click.Context(main), name)
        assert command is not None and command.name == name, name
    # and no module defines a command the table leaves out
    for module_name in set(COMMAND_MODULES.values()):
        module = importlib.import_module(f"mailer.cli.{module_name}")
        assert {c.name for c in module.COMMANDS} <= set(COMMAND_MODULES), module_name


@pytest.mark.parametrize(
    "package", ["mailer", "mailer.access", "mailer.delivery", "mailer.contacts"]
)
def test_every_name_a_package_exports_lazily_is_there(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        module.nothing  # noqa: B018
