"""The tables of mailer, as SQLAlchemy 2.0 models (SQLite and PostgreSQL alike).

Employee information has no place here on purpose: CPI's privacy policy keeps it out of this
service, and `mailer import` refuses files that carry it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: The largest id a row can have (the id columns are 32-bit integers).
MAX_ID = 2**31 - 1


def parse_id(text: str) -> int | None:
    """The id that `text` spells in ASCII digits, or None: not such digits ("²" is a digit to
    `str.isdigit` but not to `int`), or past every id (the database would overflow)."""
    text = text.strip()
    if text.isascii() and text.isdigit() and int(text) <= MAX_ID:
        return int(text)
    return None


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: mailer stores only aware UTC times")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


#: 64-bit ids on PostgreSQL; SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    phone: Mapped[str] = mapped_column(String(40), default="")
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: A disabled user cannot sign in; their sessions are revoked and their API tokens refused.
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: The base32 TOTP secret (RFC 6238), sealed (`mailer.sealing`); empty until the user enrolls.
    totp_secret: Mapped[str] = mapped_column(String(200), default="")
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The last 30-second step a code was accepted for: the same code never works twice.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)


class LoginSession(Base):
    """A signed-in browser: the cookie holds a random id, this row only its SHA-256."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    ip: Mapped[str] = mapped_column(String(45), default="")
    user_agent: Mapped[str] = mapped_column(String(500), default="")
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: Why it ended: logout, logout_everywhere, password_changed, user_disabled, expired.
    revoked_reason: Mapped[str] = mapped_column(String(30), default="")

    user: Mapped[User] = relationship()

    __table_args__ = (Index(None, "user_id"),)


class ApiToken(Base):
    """A bearer token for the JSON API (`mlr_<public_id>_<secret>`); only the secret's SHA-256."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()

    __table_args__ = (Index(None, "user_id"),)


class AccessSetting(Base):
    """A security setting an admin changes at run time (e.g. TOTP required for every admin)."""

    __tablename__ = "access_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(64), default="")


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(200))
    industry: Mapped[str] = mapped_column(String(100), default="")
    benefit_eligible_employees: Mapped[int | None] = mapped_column(Integer)
    street: Mapped[str] = mapped_column(String(200), default="")
    city: Mapped[str] = mapped_column(String(100), default="")
    state: Mapped[str] = mapped_column(String(2), default="")
    postal_code: Mapped[str] = mapped_column(String(10), default="")
    country: Mapped[str] = mapped_column(String(2), default="US")
    account_manager_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    agreement_started_on: Mapped[dt.date | None] = mapped_column(Date)
    agreement_ended_on: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_activity_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    account_manager: Mapped[User | None] = relationship()
    contacts: Mapped[list[Contact]] = relationship(back_populates="organization")
    tags: Mapped[list[OrganizationTag]] = relationship(cascade="all, delete-orphan")

    __table_args__ = (
        Index(None, "kind", "industry"),
        Index(None, "state"),
        Index(None, "benefit_eligible_employees"),
        Index(None, "account_manager_id"),
        Index(None, "last_activity_at"),
    )


class OrganizationTag(Base):
    __tablename__ = "organization_tags"

    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)

    __table_args__ = (Index(None, "tag", "organization_id"),)


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    #: email-validator's normalized form: domain lowercased, local part as given.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    #: Keyed hash of the lowercased address; opt-outs and suppressions match on it.
    address_hash: Mapped[str] = mapped_column(String(64))
    needs_smtputf8: Mapped[bool] = mapped_column(Boolean, default=False)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    title: Mapped[str] = mapped_column(String(200), default="")
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(10), default="active")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_activity_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    organization: Mapped[Organization] = relationship(back_populates="contacts")

    __table_args__ = (
        Index(None, "organization_id"),
        Index(None, "address_hash"),
        Index(None, "last_activity_at"),
    )


class OptOut(Base):
    """A contact's opt-out of one category or of all marketing; kept as proof, never deleted.

    Opting back in sets `revoked_at`. The row survives retention as a hashed address, so a
    re-import never re-subscribes anyone.
    """

    __tablename__ = "opt_outs"

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    address_hash: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(20))
    opted_out_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(20))
    ip: Mapped[str] = mapped_column(String(45), default="")
    user_agent: Mapped[str] = mapped_column(String(500), default="")
    send_id: Mapped[int | None] = mapped_column(BigId)

    __table_args__ = (Index(None, "address_hash", "category"), Index(None, "contact_id"))


class Suppression(Base):
    """An address no mail goes to, for any category (hard bounce, complaint, manual, invalid)."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The address in clear; retention blanks it and keeps only the hash.
    address: Mapped[str] = mapped_column(String(320), default="")
    address_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    detail: Mapped[str] = mapped_column(Text, default="")


class AuditEvent(Base):
    """One action by a person or a process; readable only by admins."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(100))
    object_type: Mapped[str] = mapped_column(String(50), default="")
    object_id: Mapped[str] = mapped_column(String(100), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip: Mapped[str] = mapped_column(String(45), default="")

    __table_args__ = (Index(None, "at"), Index(None, "object_type", "object_id"))


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(20))
    template: Mapped[str] = mapped_column(String(200))
    #: The saved audience the rule came from, if any; `rule_text` is what was launched.
    audience: Mapped[str] = mapped_column(String(100), default="")
    rule_text: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64))
    #: The user the mail is sent as (service mail: the account manager).
    sender_username: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(20), default="draft")
    status_detail: Mapped[str] = mapped_column(Text, default="")
    scheduled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    launched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: Set while the send log is planned in two steps: the last contact id planned so far.
    #: The launcher (or, after a crash, the sweep) plans the rest and clears it.
    planned_through: Mapped[int | None] = mapped_column(BigInteger)
    #: Extra template context (e.g. the policy version of a notice).
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: The campaign's own subject (a Jinja source like the template's), replacing the
    #: template's; empty: the template's subject.
    subject: Mapped[str] = mapped_column(Text, default="")
    #: The stored template chosen (None: `template` names a built-in file template).
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("stored_templates.id", ondelete="RESTRICT")
    )
    #: The stored version the campaign launched with: its latest version at launch.
    template_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("template_versions.id", ondelete="RESTRICT")
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index(None, "status", "scheduled_at"),)


class StoredTemplate(Base):
    """A template edited in the browser (or saved from the CLI) and kept in the database.

    Its full name is `category/name`, like a built-in file template's, and never the same as
    one. Its content lives in `TemplateVersion` rows: every save adds one.
    """

    __tablename__ = "stored_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    category: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(100))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("category", "name"),)


class TemplateVersion(Base):
    """One saved version of a stored template; never changed once written."""

    __tablename__ = "template_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("stored_templates.id", ondelete="CASCADE"))
    #: 1, 2, 3 … within its template.
    number: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str] = mapped_column(Text)
    #: The campaign parameters it reads as `{{ params.x }}`, comma-separated.
    params: Mapped[str] = mapped_column(String(500), default="")
    html: Mapped[str] = mapped_column(Text)
    #: None: the text part is derived from the HTML.
    text: Mapped[str | None] = mapped_column(Text)
    #: What changed, in the author's words.
    note: Mapped[str] = mapped_column(String(500), default="")
    author: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: SHA-256 of subject, params, HTML and text: the same content has the same hash.
    content_hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("template_id", "number"),)


class CampaignSnapshot(Base):
    """What a campaign sent, written in its launch transaction: the sources it was rendered
    from and one message rendered from them for the sample contact, with the campaign's own
    sender and parameters."""

    __tablename__ = "campaign_snapshots"

    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    #: `category/name` of the template, and its stored version (None: a built-in file).
    template: Mapped[str] = mapped_column(String(200))
    template_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("template_versions.id", ondelete="SET NULL")
    )
    template_version: Mapped[int | None] = mapped_column(Integer)
    subject_source: Mapped[str] = mapped_column(Text)
    html_source: Mapped[str] = mapped_column(Text)
    text_source: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    #: Who the sample was rendered for: the documented sample contact (SAMPLE_RECIPIENT), so
    #: no real contact's details are copied where retention would not find them.
    sample_email: Mapped[str] = mapped_column(String(320), default="")
    sample_subject: Mapped[str] = mapped_column(Text)
    sample_text: Mapped[str] = mapped_column(Text)
    sample_html: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Send(Base):
    """The send log: one row per (campaign, contact)."""

    __tablename__ = "sends"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign keys: a key checks each row inserted, three queries with a row lock per row
    # planned, though planning writes only rows it joined from those very tables. Triggers on
    # the tables referred to do what the keys did on delete (migration 0017): a campaign
    # deleted takes its sends along, a contact or organization deleted leaves them detached
    # (NULL). Planning and retention's purge never overlap (`db.send_log_writers`). A migration
    # that batch-alters sends, campaigns, contacts or organizations on SQLite must drop and
    # make again those triggers (`mailer/migrations/send_log_triggers.py`).
    campaign_id: Mapped[int] = mapped_column(Integer)
    contact_id: Mapped[int | None] = mapped_column(Integer)
    organization_id: Mapped[int | None] = mapped_column(Integer)
    #: Copied from the campaign so frequency caps need no join.
    category: Mapped[str] = mapped_column(String(20))
    #: The address at planning time.
    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(10))
    skip_reason: Mapped[str] = mapped_column(String(30), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    first_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    smtp_code: Mapped[int | None] = mapped_column(Integer)
    smtp_reply: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # Every claim and every recorded result adds an entry to each index the row meets
        # (`status` is indexed, so no update is HOT): the send log has no index it can spare,
        # and none holds rows it need not (docs/performance.md §8). Led by contact_id, the
        # unique key also serves every lookup by contact (history, retention, the delete
        # trigger's SET NULL); campaign_id lookups take (campaign_id, status).
        UniqueConstraint("contact_id", "campaign_id"),
        Index(None, "campaign_id", "status"),
        # Frequency caps ("received … in the last N days") ask only about rows sent: a row
        # enters this index when its delivery is recorded, not when planned or claimed.
        Index(
            "ix_sends_contact_id_category_sent_at_sent",
            "contact_id",
            "category",
            "sent_at",
            postgresql_where=text("sent_at IS NOT NULL"),
            sqlite_where=text("sent_at IS NOT NULL"),
        ),
        # Deleting an organization sets its sends' organization_id to NULL (its trigger):
        # without this index every deleted organization scans the whole send log (retention).
        Index(None, "organization_id"),
        # Partial indexes for the sweep. An index led by `status` would tempt the planner to
        # find a slice's rows through status = 'queued' (every row of a new campaign)
        # instead of the primary key.
        Index(
            "ix_sends_lease_expires_at_sending",
            "lease_expires_at",
            postgresql_where=text("status = 'sending'"),
            sqlite_where=text("status = 'sending'"),
        ),
        Index(
            "ix_sends_next_attempt_at_deferred",
            "next_attempt_at",
            postgresql_where=text("status = 'deferred'"),
            sqlite_where=text("status = 'deferred'"),
        ),
    )


class PolicyVersion(Base):
    """One published version of CPI's privacy policy; the first is privacy-policy.txt."""

    __tablename__ = "policy_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(32), unique=True)
    effective_on: Mapped[dt.date] = mapped_column(Date)
    text: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text, default="")
    is_material: Mapped[bool] = mapped_column(Boolean, default=False)
    published_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_by: Mapped[str] = mapped_column(String(100))
    #: The notice campaign launched for a material change, if any.
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"))


class KeyId(Base):
    """Which secret a long-lived derived value was made with, by a non-secret id of the key.

    Address hashes must outlive key rotation: the row for `address_hash` names the key every
    stored hash was made with, so a rotated MAILER_SECRET_KEY never silently changes it.
    """

    __tablename__ = "key_ids"

    purpose: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Heartbeat(Base):
    """A running `mailer worker` process or `mailer scheduler`, as it last reported itself."""

    __tablename__ = "heartbeats"

    #: "<kind>:<host>:<pid>", e.g. "worker:mail1:4242".
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  #: worker | scheduler
    host: Mapped[str] = mapped_column(String(100))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: What the process says of itself: threads and queues, or the last sweep's findings.
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (Index(None, "kind", "seen_at"),)


class SoftBounce(Base):
    """Soft bounces of one address since its last delivery (STANDARDS §6: 3 over ≥ 7 days)."""

    __tablename__ = "soft_bounces"

    address_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    first_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_send_id: Mapped[int | None] = mapped_column(BigInteger)
    last_detail: Mapped[str] = mapped_column(Text, default="")
    #: The last delivery to the address, which starts the count again (not the bouncing send).
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    delivered_send_id: Mapped[int | None] = mapped_column(BigInteger)


class DeliveryEvent(Base):
    """What a mailbox provider or relay told us about a send after the SMTP reply.

    `(source, event_key)` is unique: the same provider event delivered twice is taken once.
    """

    __tablename__ = "delivery_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: arf, dsn, ses, sendgrid, postmark, mailgun
    source: Mapped[str] = mapped_column(String(20))
    event_key: Mapped[str] = mapped_column(String(200))
    #: delivered, soft_bounce, hard_bounce, complaint, unsubscribe, other
    kind: Mapped[str] = mapped_column(String(20))
    send_id: Mapped[int | None] = mapped_column(BigInteger)
    campaign_id: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    detail: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        UniqueConstraint("source", "event_key"),
        Index(None, "campaign_id", "kind"),
    )


class Alert(Base):
    """An operator alert, raised once per cause (`key`), then mailed and/or posted."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    raised_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index(None, "sent_at"),)


class ScheduledJob(Base):
    """A daily job of `mailer scheduler`: the row is the lease that lets one scheduler run it."""

    __tablename__ = "scheduled_jobs"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    #: The local date of the last run claimed; a scheduler claims today's with compare-and-set.
    last_run_on: Mapped[dt.date | None] = mapped_column(Date)
    holder: Mapped[str] = mapped_column(String(200), default="")
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
