"""Templates edited in the browser (or saved from the CLI) and kept in the database.

`store` keeps stored templates and their immutable versions, checked on every save by the same
static check as `mailer template check`; `catalog` lists and opens them; `pinning` says which
source a campaign renders from, pins a stored version at launch and writes the campaign's
snapshot; `rights` says who may see and who may change templates of each category.
"""

from mailer.template_store.catalog import (
    StoredInfo,
    builtin_copy,
    error_fields,
    get_stored,
    get_version,
    list_stored,
    template_choices,
)
from mailer.template_store.pinning import (
    ChosenSource,
    campaign_source,
    campaign_template,
    check_chosen,
    choose_source,
    compiled_template,
    get_snapshot,
    pin_and_snapshot,
    snapshot_of,
    snapshot_summary,
    version_label,
)
from mailer.template_store.rights import (
    EDITABLE_CATEGORIES,
    may_edit,
    may_see,
    require_template_right,
)
from mailer.template_store.store import (
    MAX_SOURCE_CHARS,
    VersionInfo,
    save_version,
    split_name,
)

__all__ = [
    "EDITABLE_CATEGORIES",
    "MAX_SOURCE_CHARS",
    "ChosenSource",
    "StoredInfo",
    "VersionInfo",
    "builtin_copy",
    "campaign_source",
    "campaign_template",
    "check_chosen",
    "choose_source",
    "compiled_template",
    "error_fields",
    "get_snapshot",
    "get_stored",
    "get_version",
    "list_stored",
    "may_edit",
    "may_see",
    "pin_and_snapshot",
    "require_template_right",
    "save_version",
    "snapshot_of",
    "snapshot_summary",
    "split_name",
    "template_choices",
    "version_label",
]
