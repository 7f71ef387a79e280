"""US state codes (USPS) and the names people write instead of them."""

from __future__ import annotations

import difflib

#: USPS code → name: 50 states, DC, the territories and the military "states".
STATE_NAMES = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware", "FL": "Florida", "GA": "Georgia",
    "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois", "IN": "Indiana", "IA": "Iowa",
    "KS": "Kansas", "KY": "Kentucky", "LA": "Louisiana", "ME": "Maine", "MD": "Maryland",
    "MA": "Massachusetts", "MI": "Michigan", "MN": "Minnesota", "MS": "Mississippi",
    "MO": "Missouri", "MT": "Montana", "NE": "Nebraska", "NV": "Nevada", "NH": "New Hampshire",
    "NJ": "New Jersey", "NM": "New Mexico", "NY": "New York", "NC": "North Carolina",
    "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma", "OR": "Oregon", "PA": "Pennsylvania",
    "RI": "Rhode Island", "SC": "South Carolina", "SD": "South Dakota", "TN": "Tennessee",
    "TX": "Texas", "UT": "Utah", "VT": "Vermont", "VA": "Virginia", "WA": "Washington",
    "WV": "West Virginia", "WI": "Wisconsin", "WY": "Wyoming",
    "DC": "District of Columbia", "PR": "Puerto Rico", "GU": "Guam", "VI": "U.S. Virgin Islands",
    "AS": "American Samoa", "MP": "Northern Mariana Islands", "UM": "U.S. Minor Outlying Islands",
    "AA": "Armed Forces Americas", "AE": "Armed Forces Europe", "AP": "Armed Forces Pacific",
}  # fmt: skip

US_STATES = frozenset(STATE_NAMES)

#: Other ways a name is written (lower case) → code.
_OTHER_NAMES = {
    "washington dc": "DC", "washington d.c.": "DC", "d.c.": "DC", "virgin islands": "VI",
    "us virgin islands": "VI", "ore": "OR", "ore.": "OR", "calif": "CA", "calif.": "CA",
    "wash": "WA", "wash.": "WA", "mass": "MA", "mass.": "MA", "penn": "PA", "texas": "TX",
}  # fmt: skip
_BY_NAME = {name.lower(): code for code, name in STATE_NAMES.items()} | _OTHER_NAMES


def code_for(written: str) -> str | None:
    """The USPS code a state name (or a near miss of one) stands for: 'Oregon' → 'OR'."""
    word = " ".join(written.strip().lower().split())
    if word.upper() in US_STATES:
        return word.upper()
    if word in _BY_NAME:
        return _BY_NAME[word]
    close = difflib.get_close_matches(word, list(_BY_NAME), n=1, cutoff=0.75)
    return _BY_NAME[close[0]] if close else None


def describe(code: str) -> str:
    """'OR (Oregon)'."""
    return f"{code} ({STATE_NAMES[code]})"
