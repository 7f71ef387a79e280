"""Secrets sealed at rest (AES-256-GCM): the format, key rotation, and TOTP secrets in the
database: sealed on enrollment, resealed at sign-in, sealed by migration 0015."""

from __future__ import annotations

import time

import pytest
from alembic import command
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import inspect, select, text, update

from mailer import db
from mailer.access import Actor, MemoryLoginThrottle, authenticate, totp
from mailer.access.users import add_user
from mailer.config import Secret, Settings
from mailer.keys import key_id
from mailer.models import User
from mailer.runtime import Runtime
from mailer.sealing import Sealer, SealError, is_sealed

OLD_KEY = "an-old-secret-key-that-was-rotated-out"
NEW_KEY = "the-new-secret-key-in-use-from-now-on"
PASSWORD = "correct horse battery staple"


def sealer(*keys: str) -> Sealer:
    return Sealer(list(keys), purpose="totp")


@given(st.text(max_size=200), st.text(min_size=1, max_size=40))
def test_what_is_sealed_opens_to_the_same_text_in_the_same_place(plain: str, where: str) -> None:
    box = sealer(NEW_KEY)
    stored = box.seal(plain, where=where)
    assert box.open(stored, where=where).plaintext == plain


def test_a_sealed_value_is_versioned_names_its_key_and_hides_the_secret() -> None:
    stored = sealer(NEW_KEY).seal("JBSWY3DPEHPK3PXP", where="users.totp_secret:1")
    version, kid, nonce, ciphertext = stored.split(":")
    assert (version, kid) == ("v1", key_id(NEW_KEY))
    assert "JBSWY3DP" not in stored and len(stored) <= 200
    assert (len(nonce), len(ciphertext)) == (16, 43)  # 12 bytes; 16 bytes + 16 of GCM tag
    # a fresh nonce each time: equal secrets do not look equal
    assert stored != sealer(NEW_KEY).seal("JBSWY3DPEHPK3PXP", where="users.totp_secret:1")


def test_an_old_key_still_opens_and_says_the_value_needs_sealing_again() -> None:
    stored = sealer(OLD_KEY).seal("SECRET", where="users.totp_secret:7")
    opened = sealer(NEW_KEY, OLD_KEY).open(stored, where="users.totp_secret:7")
    assert (opened.plaintext, opened.is_current) == ("SECRET", False)
    opened = sealer(OLD_KEY).open(stored, where="users.totp_secret:7")
    assert opened.is_current


def test_a_value_sealed_with_a_key_no_longer_configured_names_the_fix() -> None:
    stored = sealer(OLD_KEY).seal("SECRET", where="w")
    with pytest.raises(SealError, match="put that key back in MAILER_OLD_SECRET_KEYS"):
        sealer(NEW_KEY).open(stored, where="w")


def test_an_altered_or_moved_value_does_not_open() -> None:
    box = sealer(NEW_KEY)
    stored = box.seal("SECRET", where="users.totp_secret:1")
    with pytest.raises(SealError, match="copied from another row"):
        box.open(stored, where="users.totp_secret:2")
    head, last = stored.rsplit(":", 1)
    flipped = head + ":" + ("A" if last[0] != "A" else "B") + last[1:]
    with pytest.raises(SealError, match="altered"):
        box.open(flipped, where="users.totp_secret:1")
    with pytest.raises(SealError, match="malformed"):
        box.open("v1:abc", where="users.totp_secret:1")


def test_a_value_stored_in_clear_before_sealing_opens_as_itself_to_be_sealed() -> None:
    opened = sealer(NEW_KEY).open("JBSWY3DPEHPK3PXP", where="w")
    assert (opened.plaintext, opened.is_current) == ("JBSWY3DPEHPK3PXP", False)
    assert not is_sealed("JBSWY3DPEHPK3PXP")


def test_purposes_do_not_share_keys() -> None:
    stored = Sealer([NEW_KEY], purpose="totp").seal("SECRET", where="w")
    with pytest.raises(SealError):
        Sealer([NEW_KEY], purpose="smtp").open(stored, where="w")


# --- TOTP secrets in the database -------------------------------------------------------------


def with_keys(rt: Runtime, current: str, *old: str) -> Runtime:
    settings = rt.settings.with_(
        secret_key=Secret(current), old_secret_keys=tuple(map(Secret, old))
    )
    return Runtime(settings, rt.engine, rt.sessions)


def enrolled(rt: Runtime, username: str = "mark") -> tuple[Actor, str]:
    with rt.sessions.begin() as s:
        add_user(
            s,
            username=username,
            display_name=username.title(),
            email=f"{username}@cpi.example",
            role="marketing",
            password=PASSWORD,
            audited_as="test",
        )
    with rt.sessions.begin() as s:
        user = s.scalars(select(User).where(User.username == username)).one()
        actor = Actor(user.id, username, user.role, "web")  # type: ignore[arg-type]
        secret = totp.begin_enrollment(s, actor, settings=rt.settings)
        code = totp.code_at(secret, totp.step_at(time.time()) - 1)
        totp.confirm_enrollment(s, actor, code, settings=rt.settings)
    return actor, secret


def stored(rt: Runtime, username: str = "mark") -> str:
    with rt.sessions() as s:
        return s.scalar(select(User.totp_secret).where(User.username == username)) or ""


def sign_in(rt: Runtime, secret: str, step_offset: int = 0) -> object:
    code = totp.code_at(secret, totp.step_at(time.time()) + step_offset)
    with rt.sessions.begin() as s:
        return authenticate(
            s,
            "mark",
            PASSWORD,
            "192.0.2.1",
            "",
            throttle=MemoryLoginThrottle(max_failures=5, window_s=300),
            settings=rt.settings,
            totp_code=code,
        )


def test_an_enrolled_secret_is_stored_sealed_under_the_current_key(rt: Runtime) -> None:
    _, secret = enrolled(rt)
    value = stored(rt)
    assert is_sealed(value) and secret not in value
    assert value.split(":")[1] == key_id(rt.settings.secret_key.reveal())


def test_rotating_the_secret_key_keeps_totp_working_and_reseals_at_sign_in(rt: Runtime) -> None:
    # Given mark enrolled under the old key
    old = with_keys(rt, OLD_KEY)
    _, secret = enrolled(old)
    # When the key rotates (the old one kept in MAILER_OLD_SECRET_KEYS) and mark signs in
    new = with_keys(rt, NEW_KEY, OLD_KEY)
    assert isinstance(sign_in(new, secret), Actor)
    # Then his secret is sealed under the new key, and the old key is no longer needed
    assert stored(rt).split(":")[1] == key_id(NEW_KEY)
    assert isinstance(sign_in(with_keys(rt, NEW_KEY), secret, step_offset=1), Actor)


def test_a_secret_sealed_under_a_dropped_key_refuses_sign_in_with_the_fix(rt: Runtime) -> None:
    _, secret = enrolled(with_keys(rt, OLD_KEY))
    failure = sign_in(with_keys(rt, NEW_KEY), secret)
    assert getattr(failure, "reason", None) == "totp_unreadable"
    assert "mailer users reset-totp mark" in getattr(failure, "message", "")


def test_a_secret_stored_in_clear_still_works_and_is_sealed_at_sign_in(rt: Runtime) -> None:
    _, secret = enrolled(rt)
    with rt.sessions.begin() as s:  # as an older mailer stored it
        s.execute(update(User).where(User.username == "mark").values(totp_secret=secret))
    assert isinstance(sign_in(rt, secret), Actor)
    assert is_sealed(stored(rt)) and secret not in stored(rt)


# --- migration 0015 ---------------------------------------------------------------------------


def _user_at_0013(engine: object, secret: str) -> None:
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            text(
                "INSERT INTO users (username, display_name, email, phone, role, password_hash, "
                "created_at, is_active, totp_secret, totp_enabled) VALUES ('mark', 'Mark', "
                "'mark@cpi.example', '', 'marketing', '', CURRENT_TIMESTAMP, TRUE, :s, TRUE)"
            ),
            {"s": secret},
        )


def test_migration_0015_seals_clear_secrets_when_given_the_keys_and_downgrade_opens_them(
    blank_url: str,
) -> None:
    settings = Settings.from_env(
        {"MAILER_DATABASE_URL": blank_url, "MAILER_SECRET_KEY": NEW_KEY}, env_file=None
    )
    engine = db.make_engine(blank_url)
    db.upgrade(engine, "0013")
    _user_at_0013(engine, "JBSWY3DPEHPK3PXP")
    db.upgrade(engine, settings=settings)
    with engine.connect() as conn:
        user_id, value = conn.execute(text("SELECT id, totp_secret FROM users")).one()
    assert is_sealed(value)
    opened = totp.sealer(settings).open(value, where=totp.where(user_id))
    assert (opened.plaintext, opened.is_current) == ("JBSWY3DPEHPK3PXP", True)
    [column] = [c for c in inspect(engine).get_columns("users") if c["name"] == "totp_secret"]
    assert column["type"].length == 200
    # a downgrade needs the keys too, and puts the secret back as it was
    cfg = db._alembic_config(engine)
    with pytest.raises(RuntimeError, match="secret_keys"):
        command.downgrade(cfg, "0013")
    cfg.attributes["secret_keys"] = [NEW_KEY]
    command.downgrade(cfg, "0013")
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT totp_secret FROM users")) == "JBSWY3DPEHPK3PXP"
    engine.dispose()


def test_migration_0015_without_the_keys_leaves_clear_secrets_for_sign_in_to_seal(
    blank_url: str,
) -> None:
    engine = db.make_engine(blank_url)
    db.upgrade(engine, "0013")
    _user_at_0013(engine, "JBSWY3DPEHPK3PXP")
    db.upgrade(engine)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT totp_secret FROM users")) == "JBSWY3DPEHPK3PXP"
    engine.dispose()
