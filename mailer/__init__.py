"""mailer: CPI's email and notification campaign service.

What the entry points (`mailer.cli`, `mailer.web`, `workers`) and scripts use is exported here;
everything else is reached through its module.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from mailer.config import Secret, Settings
from mailer.enums import (
    ALL_MARKETING,
    CampaignStatus,
    Category,
    OptOutSource,
    Role,
    SendStatus,
    SkipReason,
)
from mailer.errors import (
    CampaignError,
    ConfigError,
    ContactImportError,
    EmployeeDataError,
    MailerError,
    NotFoundError,
    PermissionDeniedError,
    RuleError,
    SchemaBehindError,
    TemplateError,
    TokenError,
    TransientSendError,
)
from mailer.lazy import lazy_exports as _lazy_exports

if _TYPE_CHECKING:
    from mailer.runtime import Runtime, open_runtime

__all__ = [
    "ALL_MARKETING",
    "CampaignError",
    "CampaignStatus",
    "Category",
    "ConfigError",
    "ContactImportError",
    "EmployeeDataError",
    "MailerError",
    "NotFoundError",
    "OptOutSource",
    "PermissionDeniedError",
    "Role",
    "RuleError",
    "Runtime",
    "SchemaBehindError",
    "Secret",
    "SendStatus",
    "Settings",
    "SkipReason",
    "TemplateError",
    "TokenError",
    "TransientSendError",
    "open_runtime",
]

# the runtime imports SQLAlchemy and the models: on first use, so that `mailer.cli` starts
# light and imports a command's module with the collector off (mailer/cli/__init__.py)
__getattr__ = _lazy_exports(__name__, {"mailer.runtime": ["Runtime", "open_runtime"]})
