"""Contacts: the CSV import of organizations and their contacts, and sample data.

The importer and the sample generator load on first use (`mailer.lazy`): the audience rules
import `mailer.contacts.states` on every command's path, and need neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailer.lazy import lazy_exports

if TYPE_CHECKING:
    from mailer.contacts.importer import ImportReport, default_rejects_path, import_contacts
    from mailer.contacts.sample import generate_sample, load_sample_into_db, write_sample_csv

__all__ = [
    "ImportReport",
    "default_rejects_path",
    "generate_sample",
    "import_contacts",
    "load_sample_into_db",
    "write_sample_csv",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "mailer.contacts.importer": ["ImportReport", "default_rejects_path", "import_contacts"],
        "mailer.contacts.sample": ["generate_sample", "load_sample_into_db", "write_sample_csv"],
    },
)
