"""Contacts: the CSV import of organizations and their contacts, and sample data."""

from mailer.contacts.importer import ImportReport, default_rejects_path, import_contacts

__all__ = ["ImportReport", "default_rejects_path", "import_contacts"]
