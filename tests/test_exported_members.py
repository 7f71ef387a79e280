"""`mailer.__all__` lists exactly the public names the package exports."""

from __future__ import annotations

import mailer


def test_all_names_every_public_member_and_nothing_else() -> None:
    for name in mailer.__all__:
        getattr(mailer, name)  # the runtime's names are imported on first use (mailer.lazy)
    public = {
        name
        for name, value in vars(mailer).items()
        if not name.startswith("_") and not getattr(value, "__name__", "").startswith("mailer.")
    }
    assert set(mailer.__all__) == public


def test_every_exported_name_is_importable() -> None:
    for name in mailer.__all__:
        assert getattr(mailer, name) is not None
