"""Contacts: the CSV import of organizations and their contacts, and sample data."""

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
