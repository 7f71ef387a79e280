"""The statuses and kinds of mailer's domain, each defined once and stored as text."""

from __future__ import annotations

from enum import StrEnum


class OrganizationKind(StrEnum):
    CLIENT = "client"
    PROSPECT = "prospect"


class ContactStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"


class Role(StrEnum):
    ADMIN = "admin"
    MARKETING = "marketing"
    ACCOUNT_MANAGER = "account_manager"


class Category(StrEnum):
    FEATURES = "features"
    PROMOTIONS = "promotions"
    SERVICE = "service"
    POLICY = "policy"

    @property
    def is_marketing(self) -> bool:
        return self in (Category.FEATURES, Category.PROMOTIONS)

    @property
    def allows_opt_out(self) -> bool:
        return self is not Category.POLICY

    @property
    def is_at_least_once(self) -> bool:
        """Service and policy mail is resent after a crash; marketing mail never is."""
        return self in (Category.SERVICE, Category.POLICY)


#: The opt-out "category" that covers every marketing category at once.
ALL_MARKETING = "all_marketing"

#: What an opt-out may name: a category that allows opting out, or all marketing.
OPT_OUT_SCOPES = (Category.FEATURES, Category.PROMOTIONS, Category.SERVICE, ALL_MARKETING)


class OptOutSource(StrEnum):
    ONE_CLICK = "one_click"
    CONFIRM_PAGE = "confirm_page"
    PREFERENCES = "preferences"
    MAILTO = "mailto"
    COMPLAINT = "complaint"
    ADMIN = "admin"
    #: Repeated soft bounces stopped the address's marketing mail (mailer.deliverability).
    SOFT_BOUNCE = "soft_bounce"
    #: An unsubscribe a relay provider (SES, SendGrid, Postmark, Mailgun) reported.
    PROVIDER = "provider"


class SuppressionReason(StrEnum):
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"
    INVALID = "invalid"


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    MISSED = "missed"
    SENDING = "sending"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class SendStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNKNOWN = "unknown"


class SkipReason(StrEnum):
    OPTED_OUT = "opted_out"
    SUPPRESSED = "suppressed"
    NOT_ELIGIBLE = "not_eligible"
    INACTIVE = "inactive"
    NOT_A_CLIENT = "not_a_client"
    NO_ACTIVE_AGREEMENT = "no_active_agreement"
    NOT_OWN_CLIENT = "not_own_client"
    FREQUENCY_CAP = "frequency_cap"
    NO_SMTPUTF8 = "no_smtputf8"
    CANCELLED = "cancelled"
