"""Rotating MAILER_SECRET_KEY: address hashes keep their key, every verifier takes the old keys."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.access import SYSTEM
from mailer.addresses import address_hash
from mailer.config import Secret
from mailer.consent import is_opted_out, opt_out
from mailer.contacts.importer import import_contacts
from mailer.enums import Category
from mailer.errors import ConfigError
from mailer.inbound import apply_events, parse_report
from mailer.messages import CampaignInfo, CampaignMessages, SenderIdentity, load_template
from mailer.messages.builder import read_message_id
from mailer.messages.context import SAMPLE_RECIPIENT
from mailer.models import Contact, Suppression
from mailer.runtime import Runtime, open_runtime
from mailer.tokens import TokenSigner
from tests.test_bounces import _mailed, dsn

NEW_KEY = "new-secret-key-after-rotation-0123456789"


def _rotated(rt: Runtime, new_key: str = NEW_KEY) -> Runtime:
    """The same database, opened as an operator who rotated the key as the README says."""
    old = rt.settings.secret_key
    settings = rt.settings.with_(secret_key=Secret(new_key), old_secret_keys=(old,))
    return open_runtime(settings)


def _contacts_csv(path: Path, email: str) -> Path:
    header = ["external_id", "kind", "organization_name", "email", "first_name", "last_name"]
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerow(["ORG-1", "client", "Cascade Builders", email, "Carol", "Diaz"])
    return path


def test_after_a_rotation_imports_and_opt_outs_still_match_the_same_contact(
    rt: Runtime, tmp_path: Path
) -> None:
    # Given Carol imported and opted out of everything under the first key
    before = open_runtime(rt.settings)
    import_contacts(
        before, _contacts_csv(tmp_path / "a.csv", "carol@cascade.example"), actor=SYSTEM
    )
    with before.sessions.begin() as s:
        carol = s.scalars(select(Contact)).one()
        opt_out(s, contact_id=carol.id, scope="all_marketing", source="preferences",
                ip="", user_agent="", actor="carol")  # fmt: skip
    # When the key is rotated and the same file, then a case variant, are imported again
    after = _rotated(rt)
    import_contacts(after, _contacts_csv(tmp_path / "a.csv", "carol@cascade.example"), actor=SYSTEM)
    report = import_contacts(
        after, _contacts_csv(tmp_path / "b.csv", "Carol@cascade.example"), actor=SYSTEM
    )
    # Then there is still one Carol, and her opt-out still covers her
    assert report.contacts_created == 0
    with after.sessions() as s:
        assert len(s.scalars(select(Contact)).all()) == 1
        assert is_opted_out(
            s, address_hash=after.hash_address("CAROL@cascade.example"), category="promotions"
        )
    assert after.hash_address("carol@cascade.example") == before.hash_address(
        "carol@cascade.example"
    )


def test_after_a_rotation_a_hard_bounce_suppresses_the_contact_it_was_about(
    rt: Runtime, make_contact: Callable[..., Contact]
) -> None:
    open_runtime(rt.settings).close()  # the first start records which key hashes addresses
    contact = make_contact()
    original = _mailed(rt, contact)  # sent under the first key
    after = _rotated(rt)
    [applied] = apply_events(after, parse_report(dsn(original)), envelope_rcpt=original.mail_from)
    assert applied.action == "bounce.hard"
    with after.sessions() as s:
        [row] = s.scalars(select(Suppression)).all()
        assert row.address_hash == contact.address_hash


def test_read_message_id_accepts_a_message_id_made_with_an_old_key(rt: Runtime) -> None:
    messages = CampaignMessages(
        rt.settings,
        template=load_template(rt.settings, "promotions/open-enrollment"),
        campaign=CampaignInfo(id=3, name="x", category=Category.PROMOTIONS),
        sender=SenderIdentity("CPI", "news@cpi.example"),
    )
    built = messages.build(replace(SAMPLE_RECIPIENT, send_id=17))
    rotated = rt.settings.with_(
        secret_key=Secret(NEW_KEY), old_secret_keys=(rt.settings.secret_key,)
    )
    assert read_message_id(rotated, built.message_id) == (3, 17)
    assert read_message_id(rotated.with_(old_secret_keys=()), built.message_id) is None


def test_bounce_and_recipient_tokens_made_with_an_old_key_still_verify(rt: Runtime) -> None:
    old = TokenSigner(rt.settings)
    rotated = TokenSigner(
        rt.settings.with_(secret_key=Secret(NEW_KEY), old_secret_keys=(rt.settings.secret_key,))
    )
    assert rotated.read_bounce(old.make_bounce(99)) == 99
    assert rotated.read(old.make(5, Category.PROMOTIONS, 6)).contact_id == 5


def test_dropping_the_key_that_hashed_the_addresses_refuses_to_start_with_the_fix(
    rt: Runtime,
) -> None:
    open_runtime(rt.settings).close()
    forgetful = rt.settings.with_(secret_key=Secret(NEW_KEY), old_secret_keys=())
    with pytest.raises(ConfigError, match="MAILER_ADDRESS_HASH_KEY"):
        open_runtime(forgetful)
    # the fix the message names: keep the old key as the address-hash key
    fixed = forgetful.with_(address_hash_key=rt.settings.secret_key)
    runtime = open_runtime(fixed)
    assert runtime.hash_address("a@b.example") == open_runtime(rt.settings).hash_address(
        "a@b.example"
    )


def test_a_new_database_hashes_with_the_address_hash_key_when_one_is_set(rt: Runtime) -> None:
    separate = Secret("a-separate-address-key-0123456789")
    first = open_runtime(rt.settings.with_(address_hash_key=separate))
    assert first.hash_address("a@b.example") == address_hash(separate.reveal(), "a@b.example")
    # the secret key alone is not the key of this database's hashes
    with pytest.raises(ConfigError, match="MAILER_ADDRESS_HASH_KEY"):
        open_runtime(rt.settings)
