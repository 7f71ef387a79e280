"""Access: the Actor and `require`, users, sign-in, sessions, API tokens, TOTP, throttling."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from argon2 import PasswordHasher
from sqlalchemy import select

from mailer.access import (
    Actor,
    LoginFailure,
    MemoryLoginThrottle,
    RedisLoginThrottle,
    authenticate,
    close_all_sessions,
    close_session,
    create_api_token,
    create_user,
    disable_user,
    enable_user,
    list_sessions,
    list_tokens,
    open_session,
    require,
    revoke_token,
    session_actor,
    set_password,
    set_role,
    token_actor,
    totp,
)
from mailer.access.api_tokens import ApiTokenError
from mailer.access.sessions import hash_session_id
from mailer.access.users import UserError, add_user
from mailer.enums import Role
from mailer.errors import PermissionDeniedError
from mailer.models import AuditEvent, LoginSession, User, utcnow
from mailer.runtime import Runtime

PASSWORD = "correct horse battery staple"
REDIS_URL = "redis://127.0.0.1:6379/0"


def new_user(rt: Runtime, username: str, role: str = "admin", password: str = PASSWORD) -> Actor:
    with rt.sessions.begin() as s:
        user = add_user(
            s,
            username=username,
            display_name=username.title(),
            email=f"{username}@cpi.example",
            role=role,
            password=password,
            audited_as="tester",
        )
        return Actor(user.id, user.username, Role(user.role), "web", "192.0.2.1")


def events(rt: Runtime, action: str) -> list[AuditEvent]:
    with rt.sessions() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def throttle() -> MemoryLoginThrottle:
    return MemoryLoginThrottle(max_failures=5, window_s=300)


# --- require and the audit of refusals ---------------------------------------------------------


def test_a_refusal_is_audited_even_though_the_transaction_rolls_back(rt: Runtime) -> None:
    mark = new_user(rt, "mark", "marketing")
    with (
        pytest.raises(PermissionDeniedError, match=r"retention\.run needs the role admin"),
        rt.sessions.begin() as s,
    ):
        s.add(AuditEvent(actor="x", action="should.vanish"))
        require(s, mark, "retention.run", object_type="retention")
    [denied] = events(rt, "denied")
    assert (denied.actor, denied.object_type, denied.ip) == ("mark", "retention", "192.0.2.1")
    assert denied.details["action"] == "retention.run"
    assert "needs the role admin" in denied.details["reason"]
    assert events(rt, "should.vanish") == []


def test_a_refusal_outside_a_transaction_is_written_at_once(rt: Runtime) -> None:
    am = new_user(rt, "amy", "account_manager")
    with rt.sessions() as s, pytest.raises(PermissionDeniedError):
        require(
            s,
            am,
            "campaign.change",
            object_type="campaign",
            object_id=7,
            allowed=False,
            reason="campaign 7 belongs to 'mark'",
        )
    [denied] = events(rt, "denied")
    assert denied.object_id == "7" and denied.details["reason"] == "campaign 7 belongs to 'mark'"


def test_an_allowed_action_writes_nothing(rt: Runtime) -> None:
    admin = new_user(rt, "ada")
    with rt.sessions.begin() as s:
        require(s, admin, "retention.run", object_type="retention")
    assert events(rt, "denied") == []


# --- users -------------------------------------------------------------------------------------


def test_the_first_admin_bootstraps_without_an_actor_and_then_only_admins_create(
    rt: Runtime,
) -> None:
    with rt.sessions.begin() as s, pytest.raises(UserError, match="there is no admin yet"):
        create_user(
            s, None, username="mark", display_name="M", email="m@cpi.example", role="marketing"
        )
    with rt.sessions.begin() as s:
        create_user(
            s,
            None,
            username="root",
            display_name="R",
            email="r@cpi.example",
            role="admin",
            password=PASSWORD,
        )
    assert [e.actor for e in events(rt, "user.bootstrap_admin")] == ["bootstrap"]
    with rt.sessions.begin() as s, pytest.raises(PermissionDeniedError, match="only an admin"):
        create_user(s, None, username="evil", display_name="E", email="e@cpi.example", role="admin")
    mark = new_user(rt, "mark", "marketing")
    with (
        pytest.raises(PermissionDeniedError, match="only an admin may create users"),
        rt.sessions.begin() as s,
    ):
        create_user(s, mark, username="evil", display_name="E", email="e@cpi.example", role="admin")
    [denied] = events(rt, "denied")
    assert (denied.actor, denied.object_id) == ("mark", "evil")
    with rt.sessions() as s:
        assert s.scalar(select(User).where(User.username == "evil")) is None


def test_a_short_password_is_refused_with_the_rule(rt: Runtime) -> None:
    admin = new_user(rt, "ada")
    with rt.sessions.begin() as s, pytest.raises(UserError, match="at least 12"):
        create_user(
            s,
            admin,
            username="bob",
            display_name="B",
            email="b@cpi.example",
            role="marketing",
            password="short",
        )


def test_disabling_a_user_ends_their_sessions_and_tokens_and_sign_in(rt: Runtime) -> None:
    admin = new_user(rt, "ada")
    mark = new_user(rt, "mark", "marketing")
    with rt.sessions.begin() as s:
        sid = open_session(s, mark, user_agent="test")
        token = create_api_token(s, admin, name="sync", username="mark").token
    with rt.sessions.begin() as s:
        disable_user(s, admin, "mark")
    with rt.sessions.begin() as s:
        assert session_actor(s, sid, settings=rt.settings) is None
        assert token_actor(s, token) is None
        result = authenticate(
            s, "mark", PASSWORD, "192.0.2.9", "ua", throttle=throttle(), settings=rt.settings
        )
    assert isinstance(result, LoginFailure) and result.reason == "invalid"
    assert [e.details["reason"] for e in events(rt, "login.failed")] == ["user disabled"]
    with rt.sessions.begin() as s:
        enable_user(s, admin, "mark")
        assert token_actor(s, token) is not None  # tokens come back; sessions stay ended
        assert session_actor(s, sid, settings=rt.settings) is None
    assert len(events(rt, "user.disable")) == 1 and len(events(rt, "user.enable")) == 1


def test_the_last_admin_cannot_be_disabled_or_demoted(rt: Runtime) -> None:
    admin = new_user(rt, "ada")
    with rt.sessions.begin() as s, pytest.raises(UserError, match="last active admin"):
        disable_user(s, admin, "ada")
    with rt.sessions.begin() as s, pytest.raises(UserError, match="last active admin"):
        set_role(s, admin, "ada", "marketing")


def test_a_role_change_applies_to_open_sessions_at_once(rt: Runtime) -> None:
    admin = new_user(rt, "ada")
    mark = new_user(rt, "mark", "marketing")
    with rt.sessions.begin() as s:
        sid = open_session(s, mark)
        set_role(s, admin, "mark", "account_manager")
    with rt.sessions.begin() as s:
        actor = session_actor(s, sid, settings=rt.settings)
    assert actor is not None and actor.role is Role.ACCOUNT_MANAGER
    [event] = events(rt, "user.set_role")
    assert (event.details["before"], event.details["after"]) == ("marketing", "account_manager")


def test_changing_a_password_signs_the_user_out_everywhere(rt: Runtime) -> None:
    mark = new_user(rt, "mark", "marketing")
    with rt.sessions.begin() as s:
        sids = [open_session(s, mark) for _ in range(2)]
    with rt.sessions.begin() as s:
        set_password(s, mark, "mark", "another long passphrase")
    with rt.sessions.begin() as s:
        assert all(session_actor(s, sid, settings=rt.settings) is None for sid in sids)
        user = s.scalar(select(User).where(User.username == "mark"))
        assert user is not None and user.password_changed_at is not None
    [event] = events(rt, "user.password_change")
    assert event.details["sessions_revoked"] == 2


def test_only_an_admin_sets_another_users_password(rt: Runtime) -> None:
    new_user(rt, "ada")
    mark = new_user(rt, "mark", "marketing")
    with (
        pytest.raises(PermissionDeniedError, match="another user's password"),
        rt.sessions.begin() as s,
    ):
        set_password(s, mark, "ada", "my own password now")


# --- sign-in ----------------------------------------------------------------------------------


def test_a_good_password_signs_in_and_is_audited(rt: Runtime) -> None:
    new_user(rt, "mark", "marketing")
    with rt.sessions.begin() as s:
        actor = authenticate(
            s, "mark", PASSWORD, "192.0.2.7", "Firefox", throttle=throttle(), settings=rt.settings
        )
    assert isinstance(actor, Actor)
    assert (actor.username, actor.role, actor.via, actor.ip) == (
        "mark",
        Role.MARKETING,
        "web",
        "192.0.2.7",
    )
    [event] = events(rt, "login")
    assert event.ip == "192.0.2.7" and event.details["user_agent"] == "Firefox"


def test_unknown_users_and_wrong_passwords_get_the_same_answer(rt: Runtime) -> None:
    new_user(rt, "mark", "marketing")
    with rt.sessions.begin() as s:
        unknown = authenticate(
            s, "nobody", PASSWORD, "192.0.2.7", "", throttle=throttle(), settings=rt.settings
        )
        wrong = authenticate(
            s,
            "mark",
            "not the password",
            "192.0.2.7",
            "",
            throttle=throttle(),
            settings=rt.settings,
        )
    assert unknown == wrong == LoginFailure("invalid", "wrong username or password")
    reasons = sorted(e.details["reason"] for e in events(rt, "login.failed"))
    assert reasons == ["unknown user", "wrong password"]


def test_a_weak_old_hash_is_upgraded_at_sign_in(rt: Runtime) -> None:
    new_user(rt, "mark", "marketing")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with rt.sessions.begin() as s:
        s.scalars(select(User)).one().password_hash = weak
    with rt.sessions.begin() as s:
        assert isinstance(
            authenticate(s, "mark", PASSWORD, "ip", "", throttle=throttle(), settings=rt.settings),
            Actor,
        )
    with rt.sessions() as s:
        stored = s.scalars(select(User)).one().password_hash
    assert stored != weak and "m=65536" in stored


def test_five_failures_throttle_that_ip_and_username_with_the_wait(rt: Runtime) -> None:
    new_user(rt, "mark", "marketing")
    limiter = throttle()
    with rt.sessions.begin() as s:
        for _ in range(5):
            authenticate(
                s, "mark", "guess", "192.0.2.7", "", throttle=limiter, settings=rt.settings
            )
        refused = authenticate(
            s, "mark", PASSWORD, "192.0.2.7", "", throttle=limiter, settings=rt.settings
        )
        other_ip = authenticate(
            s, "mark", PASSWORD, "192.0.2.8", "", throttle=limiter, settings=rt.settings
        )
    assert isinstance(refused, LoginFailure) and refused.reason == "throttled"
    assert refused.retry_after_s is not None and 290 <= refused.retry_after_s <= 300
    assert "try again in 5 minutes" in refused.message
    assert isinstance(other_ip, Actor)
    assert len(events(rt, "login.throttled")) == 1


# --- sessions ---------------------------------------------------------------------------------


def test_a_session_id_is_stored_only_as_its_hash(rt: Runtime) -> None:
    mark = new_user(rt, "mark", "marketing")
    with rt.sessions.begin() as s:
        sid = open_session(s, mark, ip="192.0.2.5", user_agent="Chromium")
    with rt.sessions() as s:
        row = s.scalars(select(LoginSession)).one()
    assert row.id_hash == hash_session_id(sid) and sid not in row.id_hash
    assert (row.ip, row.user_agent) == ("192.0.2.5", "Chromium")
    assert len(sid) >= 43


def test_sessions_end_after_idle_and_absolute_timeouts(rt: Runtime) -> None:
    mark = new_user(rt, "mark", "marketing")
    settings = rt.settings.with_(session_idle_timeout_s=600, session_absolute_timeout_s=3600)
    with rt.sessions.begin() as s:
        sid = open_session(s, mark)
    start = utcnow()
    with rt.sessions.begin() as s:
        # active every 9 minutes: never idle for 10, yet over after an hour
        for minutes in range(9, 60, 9):
            at = start + dt.timedelta(minutes=minutes)
            assert session_actor(s, sid, settings=settings, now=at) is not None
        assert (
            session_actor(s, sid, settings=settings, now=start + dt.timedelta(minutes=61)) is None
        )
    with rt.sessions.begin() as s:
        sid2 = open_session(s, mark)
    with rt.sessions.begin() as s:
        assert (
            session_actor(s, sid2, settings=settings, now=start + dt.timedelta(minutes=11)) is None
        )
    with rt.sessions() as s:
        reasons = sorted(r.revoked_reason for r in s.scalars(select(LoginSession)))
    assert reasons == ["expired", "expired"]


def test_logout_and_logout_everywhere(rt: Runtime) -> None:
    admin = new_user(rt, "ada")
    mark = new_user(rt, "mark", "marketing")
    with rt.sessions.begin() as s:
        one, two, three = (open_session(s, mark) for _ in range(3))
    with rt.sessions.begin() as s:
        assert close_session(s, one, actor=mark)
        assert not close_session(s, one, actor=mark)
        assert len(list_sessions(s, mark)) == 2
        assert close_all_sessions(s, admin, "mark") == 2
        assert list_sessions(s, admin, "mark") == []
        assert len(list_sessions(s, admin, "mark", include_closed=True)) == 3
    with rt.sessions.begin() as s:
        assert session_actor(s, two, settings=rt.settings) is None
        assert session_actor(s, three, settings=rt.settings) is None
    assert len(events(rt, "logout")) == 1 and len(events(rt, "logout_everywhere")) == 1
    with (
        pytest.raises(PermissionDeniedError, match="only an admin may sign another user out"),
        rt.sessions.begin() as s,
    ):
        close_all_sessions(s, mark, "ada")


def test_a_forged_or_garbage_session_id_is_nobody(rt: Runtime) -> None:
    with rt.sessions.begin() as s:
        assert session_actor(s, "", settings=rt.settings) is None
        assert session_actor(s, "x" * 5000, settings=rt.settings) is None
        assert session_actor(s, "not-a-session", settings=rt.settings) is None


# --- API tokens -------------------------------------------------------------------------------


def test_an_api_token_acts_as_its_user_until_revoked(rt: Runtime) -> None:
    admin = new_user(rt, "ada")
    new_user(rt, "mark", "marketing")
    with rt.sessions.begin() as s:
        created = create_api_token(s, admin, name="crm-sync", username="mark")
    assert created.token.startswith("mlr_" + created.info.public_id + "_")
    with rt.sessions.begin() as s:
        actor = token_actor(s, f"Bearer {created.token}", ip="192.0.2.3")
        assert actor is not None and (actor.username, actor.via) == ("mark", "api")
        [info] = list_tokens(s, admin)
        assert info.last_used_at is not None and info.name == "crm-sync"
        assert created.token.split("_")[2] not in repr(info)
        revoke_token(s, admin, created.info.public_id)
    with rt.sessions.begin() as s:
        assert token_actor(s, created.token) is None
        assert list_tokens(s, admin) == []
        assert len(list_tokens(s, admin, include_revoked=True)) == 1
    assert len(events(rt, "token.create")) == 1 and len(events(rt, "token.revoke")) == 1


def test_wrong_expired_or_malformed_tokens_are_nobody(rt: Runtime) -> None:
    admin = new_user(rt, "ada")
    with rt.sessions.begin() as s:
        created = create_api_token(s, admin, name="short", expires_in_days=1)
    prefix, public_id, _secret = created.token.split("_")
    forged = f"{prefix}_{public_id}_{'0' * 64}"
    later = utcnow() + dt.timedelta(days=2)
    with rt.sessions.begin() as s:
        assert token_actor(s, forged) is None
        assert token_actor(s, "Bearer nonsense") is None
        assert token_actor(s, created.token, now=later) is None
        assert token_actor(s, created.token) is not None


def test_only_admins_manage_tokens_and_bad_names_are_refused(rt: Runtime) -> None:
    admin = new_user(rt, "ada")
    mark = new_user(rt, "mark", "marketing")
    with (
        pytest.raises(PermissionDeniedError, match="only an admin may create API tokens"),
        rt.sessions.begin() as s,
    ):
        create_api_token(s, mark, name="mine")
    with rt.sessions.begin() as s, pytest.raises(ApiTokenError, match="1-100 characters"):
        create_api_token(s, admin, name=" ")
    with rt.sessions.begin() as s, pytest.raises(ApiTokenError, match="1 to 3650 days"):
        create_api_token(s, admin, name="x", expires_in_days=0)


# --- TOTP -------------------------------------------------------------------------------------

RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # base32 of "12345678901234567890"


@pytest.mark.parametrize(
    ("unix_time", "code"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_totp_matches_the_rfc_6238_sha1_vectors(unix_time: int, code: str) -> None:
    assert totp.code_at(RFC_SECRET, totp.step_at(unix_time), digits=8) == code


def test_a_code_is_accepted_one_step_either_side_and_never_twice() -> None:
    secret = totp.new_secret()
    now = 1_800_000_000.0
    step = totp.step_at(now)
    for offset in (-1, 0, 1):
        assert (
            totp.matching_step(secret, totp.code_at(secret, step + offset), now=now)
            == step + offset
        )
    assert totp.matching_step(secret, totp.code_at(secret, step + 2), now=now) is None
    assert totp.matching_step(secret, totp.code_at(secret, step), now=now, after_step=step) is None
    assert totp.matching_step(secret, "12345", now=now) is None


def wrong_code(secret: str, now: float) -> str:
    step = totp.step_at(now)
    near = {totp.code_at(secret, step + d) for d in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in near)


def test_signing_in_with_totp(rt: Runtime) -> None:
    mark = new_user(rt, "mark", "marketing")
    now = time.time()
    with rt.sessions.begin() as s:
        secret = totp.begin_enrollment(s, mark, settings=rt.settings)
        with pytest.raises(totp.TotpError, match="does not match"):
            totp.confirm_enrollment(s, mark, wrong_code(secret, now), settings=rt.settings, now=now)
    with rt.sessions.begin() as s:
        # enrolled with the previous step's code, so the current one is still unused
        previous = totp.code_at(secret, totp.step_at(now) - 1)
        totp.confirm_enrollment(s, mark, previous, settings=rt.settings, now=now)
    limiter = throttle()
    with rt.sessions.begin() as s:
        needs = authenticate(s, "mark", PASSWORD, "ip", "", throttle=limiter, settings=rt.settings)
        assert isinstance(needs, LoginFailure) and needs.reason == "totp_required"
        bad = authenticate(
            s,
            "mark",
            PASSWORD,
            "ip",
            "",
            throttle=limiter,
            settings=rt.settings,
            totp_code=wrong_code(secret, now),
        )
        assert isinstance(bad, LoginFailure) and bad.reason == "totp_invalid"
        code = totp.code_at(secret, totp.step_at(time.time()))
        ok = authenticate(
            s, "mark", PASSWORD, "ip", "", throttle=limiter, settings=rt.settings, totp_code=code
        )
        assert isinstance(ok, Actor)
    with rt.sessions.begin() as s:
        replay = authenticate(
            s, "mark", PASSWORD, "ip", "", throttle=limiter, settings=rt.settings, totp_code=code
        )
    assert isinstance(replay, LoginFailure) and replay.reason == "totp_invalid"


def test_requiring_totp_for_admins(rt: Runtime) -> None:
    ada = new_user(rt, "ada")
    new_user(rt, "bob")
    mark = new_user(rt, "mark", "marketing")
    with rt.sessions.begin() as s, pytest.raises(totp.TotpError, match="set up your own"):
        totp.set_totp_required_for_admins(s, ada, True)
    with rt.sessions.begin() as s:
        secret = totp.begin_enrollment(s, ada, settings=rt.settings)
        code = totp.code_at(secret, totp.step_at(utcnow().timestamp()))
        totp.confirm_enrollment(s, ada, code, settings=rt.settings)
        assert totp.set_totp_required_for_admins(s, ada, True) == ["bob"]
    with rt.sessions.begin() as s:
        users = {u.username: u for u in s.scalars(select(User))}
        assert totp.user_must_enroll(s, users["bob"])
        assert not totp.user_must_enroll(s, users["ada"])
        assert not totp.user_must_enroll(s, users["mark"])
        with pytest.raises(totp.TotpError, match="required for every admin"):
            totp.disable_totp(s, ada)
    with pytest.raises(PermissionDeniedError), rt.sessions.begin() as s:
        totp.set_totp_required_for_admins(s, mark, False)
    with rt.sessions() as s:
        changes = s.scalars(select(AuditEvent).where(AuditEvent.action == "settings.change"))
        [change] = [e.details for e in changes]
    assert (change["before"], change["after"], change["admins_without_totp"]) == (
        False,
        True,
        ["bob"],
    )


def test_an_admin_without_totp_while_required_may_only_enroll_and_their_tokens_are_refused(
    rt: Runtime,
) -> None:
    # Given bob, an admin with a token and a session, and TOTP then required by ada
    ada = new_user(rt, "ada")
    bob = new_user(rt, "bob")
    with rt.sessions.begin() as s:
        token = create_api_token(s, ada, name="bob's sync", username="bob").token
        session_id = open_session(s, bob)
        secret = totp.begin_enrollment(s, ada, settings=rt.settings)
        code = totp.code_at(secret, totp.step_at(time.time()))
        totp.confirm_enrollment(s, ada, code, settings=rt.settings)
        totp.set_totp_required_for_admins(s, ada, True)
    # Then his session, his token and his next sign-in all stand for an actor who must enroll
    with rt.sessions.begin() as s:
        by_session = session_actor(s, session_id, settings=rt.settings)
        by_token = token_actor(s, token)
        by_login = authenticate(
            s, "bob", PASSWORD, "ip", "", throttle=throttle(), settings=rt.settings
        )
    for actor in (by_session, by_token, by_login):
        assert isinstance(actor, Actor) and actor.must_enroll
    assert by_session is not None and by_token is not None
    # and the core refuses him anything but enrolling, audited, whatever the front end
    for actor in (by_session, by_token):
        enroll_first = pytest.raises(PermissionDeniedError, match="authenticator app")
        with enroll_first, rt.sessions.begin() as s:
            list_tokens(s, actor)
        enroll_first = pytest.raises(PermissionDeniedError, match="authenticator app")
        with enroll_first, rt.sessions.begin() as s:
            create_api_token(s, actor, name="another")
    assert len(events(rt, "denied")) == 4
    with rt.sessions.begin() as s, pytest.raises(ApiTokenError, match="sets it up first"):
        create_api_token(s, ada, name="for bob", username="bob")
    # When he enrolls, he is an ordinary admin again
    with rt.sessions.begin() as s:
        secret = totp.begin_enrollment(s, by_session, settings=rt.settings)
        code = totp.code_at(secret, totp.step_at(time.time()))
        totp.confirm_enrollment(s, by_session, code, settings=rt.settings)
    with rt.sessions.begin() as s:
        again = token_actor(s, token)
        assert again is not None and not again.must_enroll
        create_api_token(s, ada, name="for bob", username="bob")


def test_an_otpauth_uri_names_the_issuer_and_user() -> None:
    uri = totp.provisioning_uri("ABCDEFGH", "mark")
    assert uri.startswith("otpauth://totp/CPI%20mailer%3Amark?secret=ABCDEFGH")
    assert "issuer=CPI+mailer" in uri and "period=30" in uri


# --- throttling -------------------------------------------------------------------------------


def test_the_in_process_throttle_forgets_failures_after_the_window() -> None:
    now = [1000.0]
    limiter = MemoryLoginThrottle(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        limiter.record_failure("ip", "Mark")
    assert limiter.retry_after_s("ip", "mark") == 60  # usernames compare case-insensitively
    now[0] += 30
    assert limiter.retry_after_s("ip", "mark") == 30
    now[0] += 31
    assert limiter.retry_after_s("ip", "mark") == 0
    limiter.record_failure("ip", "mark")
    limiter.reset("ip", "mark")
    assert limiter.retry_after_s("ip", "mark") == 0


def test_the_redis_throttle_is_shared_by_every_process() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    namespace = f"mailer-test-{uuid.uuid4().hex[:8]}"
    # two web processes, each with its own throttle object, see one count
    first = RedisLoginThrottle(client, namespace, max_failures=4, window_s=120)
    second = RedisLoginThrottle(client, namespace, max_failures=4, window_s=120)
    try:
        for limiter in (first, second, first):
            limiter.record_failure("192.0.2.1", "mark")
        assert second.retry_after_s("192.0.2.1", "mark") == 0
        second.record_failure("192.0.2.1", "mark")
        assert 119 <= first.retry_after_s("192.0.2.1", "mark") <= 120
        assert first.retry_after_s("192.0.2.2", "mark") == 0
        first.reset("192.0.2.1", "mark")
        assert second.retry_after_s("192.0.2.1", "mark") == 0
    finally:
        for key in client.scan_iter(f"{namespace}:*"):
            client.delete(key)


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_concurrent_burst_gets_no_more_tries_than_the_limit(store: str) -> None:
    # Given a throttle of 5 tries and 40 threads racing with wrong passwords
    client = redis.Redis.from_url(REDIS_URL)
    namespace = f"mailer-test-{uuid.uuid4().hex[:8]}"
    limiter: Any = (
        MemoryLoginThrottle(max_failures=5, window_s=300)
        if store == "memory"
        else RedisLoginThrottle(client, namespace, max_failures=5, window_s=300)
    )
    start = threading.Barrier(40)

    def one_try() -> bool:
        start.wait()
        wait_s, _ = limiter.begin_attempt("192.0.2.9", "mark")
        if wait_s:
            return False
        time.sleep(0.01)  # the password check, during which the others arrive
        return True

    try:
        with ThreadPoolExecutor(40) as pool:
            checked = sum(pool.map(lambda _: one_try(), range(40)))
        # Then exactly five reached a password check; a try that was no failure is forgiven
        assert checked == 5
        other = MemoryLoginThrottle(1, 60)
        _, attempt = other.begin_attempt("ip", "amy")
        other.forgive("ip", "amy", attempt)
        assert other.begin_attempt("ip", "amy")[0] == 0
    finally:
        for key in client.scan_iter(f"{namespace}:*"):
            client.delete(key)


def test_make_login_throttle_picks_redis_for_a_redis_broker(rt: Runtime) -> None:
    from mailer.access import make_login_throttle

    assert isinstance(make_login_throttle(rt.settings), MemoryLoginThrottle)
    redis_settings = rt.settings.with_(broker_url=REDIS_URL, broker_namespace="t")
    assert isinstance(make_login_throttle(redis_settings), RedisLoginThrottle)
