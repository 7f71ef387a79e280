"""Times people type and read: when to launch, in a zone, and shown back in that zone.

A launch time is an ISO date and time with an offset (`2026-12-01T09:00-08:00`, `…Z`), with a
zone name (`2026-12-01T09:00 America/Chicago` or `2026-12-01T09:00[America/Chicago]`), or
bare, in the default zone (`MAILER_TIMEZONE`). Stored and compared in UTC.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer.errors import CampaignError

#: `<time> Area/City` or `<time>[Area/City]`.
_WITH_ZONE = re.compile(r"^(?P<time>.+?)(?:\s+|\[)(?P<zone>[A-Za-z_]+(?:/[A-Za-z0-9_+-]+)*)\]?$")
EXAMPLE = "2026-12-01T09:00, 2026-12-01T09:00-08:00 or '2026-12-01 09:00 America/Chicago'"
#: The earliest and latest time a person may give: a day inside the calendar Python holds
#: (years 1 to 9999), as nearer its ends a time overflows in UTC or in another zone.
_EARLIEST = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
_LATEST = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)


def zone(name: str) -> ZoneInfo:
    """The zone called `name` (an IANA Area/City name such as America/Los_Angeles, or UTC)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CampaignError(
            f"unknown time zone {name!r}; use an Area/City name like America/Los_Angeles, "
            "America/New_York or UTC"
        ) from exc


def parse_time(text: str, default_zone: str) -> dt.datetime:
    """A launch time typed by a person, as an aware datetime in UTC."""
    raw = text.strip()
    zone_name = ""
    match = _WITH_ZONE.match(raw)
    if match and not _looks_like_offset(match["zone"]):
        raw, zone_name = match["time"].strip(), match["zone"]
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError as exc:
        raise CampaignError(f"{text!r} is not a time; write it like {EXAMPLE}") from exc
    try:
        if zone_name:
            tz = zone(zone_name)
            if value.tzinfo is not None:
                if value.utcoffset() != value.replace(tzinfo=tz).utcoffset():
                    raise CampaignError(
                        f"{text!r} gives offset {value:%z} but {zone_name} is "
                        f"{value.replace(tzinfo=None).replace(tzinfo=tz):%z} then; give one "
                        "of them"
                    )
                value = value.replace(tzinfo=None)
            value = _localize(value, tz, text)
        elif value.tzinfo is None:
            value = _localize(value, zone(default_zone), text)
    except OverflowError:
        raise _too_far(text) from None
    return to_utc(value, text)


def to_utc(value: dt.datetime, text: str) -> dt.datetime:
    """The aware time `value` (given as `text`) in UTC; CampaignError if it is so near the
    calendar's ends that it could not be stored or shown in every zone."""
    try:
        utc = value.astimezone(dt.UTC)
    except OverflowError:
        raise _too_far(text) from None
    if not _EARLIEST <= utc <= _LATEST:
        raise _too_far(text)
    return utc


def _too_far(text: str) -> CampaignError:
    return CampaignError(f"{text!r} is too far in the past or future; write it like {EXAMPLE}")


def _looks_like_offset(name: str) -> bool:
    return name.upper() == "Z" or bool(re.fullmatch(r"[+-]?\d", name))


def _localize(value: dt.datetime, tz: ZoneInfo, text: str) -> dt.datetime:
    local = value.replace(tzinfo=tz)
    # a wall time skipped when clocks go forward does not survive the round trip through UTC
    if local.astimezone(dt.UTC).astimezone(tz).replace(tzinfo=None) != value:
        raise CampaignError(
            f"{text!r} does not exist in {tz.key}: the clocks skip that hour; pick another time"
        )
    return local


def format_time(value: dt.datetime, zone_name: str) -> str:
    """`Tue 2026-12-01 09:00 PST (America/Los_Angeles)`: a stored time shown in a zone."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    local = value.astimezone(zone(zone_name))
    return f"{local:%a %Y-%m-%d %H:%M %Z} ({zone_name})"


def format_delay(delay: dt.timedelta) -> str:
    """`in 2 days 3 hours`, `in 5 minutes`, `now` for a delay not yet elapsed."""
    seconds = int(delay.total_seconds())
    if seconds < 60:
        return "now" if seconds <= 0 else "in under a minute"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [(days, "day"), (hours, "hour")] if days else [(hours, "hour"), (minutes, "minute")]
    shown = [f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in parts if n]
    return "in " + " ".join(shown)
