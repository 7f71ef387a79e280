"""Word lists for sample data: invented names, real US cities with their ZIP prefixes."""

from __future__ import annotations

#: (industry, name endings typical of it)
INDUSTRIES: list[tuple[str, tuple[str, ...]]] = [
    ("healthcare", ("Health Partners", "Family Clinic", "Medical Group", "Care Center")),
    ("manufacturing", ("Manufacturing", "Fabrication", "Machine Works", "Industries")),
    ("construction", ("Builders", "Construction", "Contracting", "Homes")),
    ("retail", ("Outfitters", "Market", "Supply", "Goods")),
    ("technology", ("Software", "Systems", "Data", "Labs")),
    ("education", ("Academy", "Learning Center", "School District", "College")),
    ("hospitality", ("Hotels", "Lodge", "Restaurant Group", "Resorts")),
    ("transportation", ("Logistics", "Freight", "Transit", "Trucking")),
    ("financial services", ("Credit Union", "Financial", "Insurance Agency", "Capital")),
    ("agriculture", ("Farms", "Orchards", "Growers", "Ranch")),
    ("nonprofit", ("Foundation", "Community Services", "Alliance", "Association")),
    ("professional services", ("Law Group", "Accounting", "Consulting", "Engineering")),
]
NAME_STEMS = (
    "Cascade", "Summit", "Pioneer", "High Desert", "Blue Ridge", "Riverbend", "Evergreen",
    "Northwind", "Juniper", "Deschutes", "Sagebrush", "Lakeside", "Cedar", "Granite", "Harbor",
    "Prairie", "Redwood", "Silver Creek", "Three Sisters", "Willow", "Bayview", "Canyon",
    "Meridian", "Aspen", "Beacon", "Copper", "Frontier", "Golden Valley", "Ironwood", "Keystone",
)  # fmt: skip
SUFFIXES = ("", "", "", " Inc.", " LLC", " Co.", " Group")
#: (city, USPS state code, first three digits of its ZIP codes)
CITIES = [
    ("Bend", "OR", "977"), ("Redmond", "OR", "977"), ("Portland", "OR", "972"),
    ("Eugene", "OR", "974"), ("Salem", "OR", "973"), ("Medford", "OR", "975"),
    ("Seattle", "WA", "981"), ("Spokane", "WA", "992"), ("Tacoma", "WA", "984"),
    ("Boise", "ID", "837"), ("Sacramento", "CA", "958"), ("San Diego", "CA", "921"),
    ("Fresno", "CA", "937"), ("Reno", "NV", "895"), ("Denver", "CO", "802"),
    ("Phoenix", "AZ", "850"), ("Salt Lake City", "UT", "841"), ("Austin", "TX", "787"),
    ("Dallas", "TX", "752"), ("Chicago", "IL", "606"), ("Minneapolis", "MN", "554"),
    ("Atlanta", "GA", "303"), ("Raleigh", "NC", "276"), ("Columbus", "OH", "432"),
    ("Nashville", "TN", "372"), ("Albany", "NY", "122"), ("Boston", "MA", "021"),
    ("Washington", "DC", "200"), ("San Juan", "PR", "009"), ("Anchorage", "AK", "995"),
]  # fmt: skip
STREETS = (
    "NW Wall St", "SW Century Dr", "Main St", "Oak Ave", "Industrial Way", "Commerce Blvd",
    "River Rd", "2nd St", "Pine St", "Lake Dr", "Market St", "Airport Rd", "Park Ave",
    "E 3rd St", "Mill St", "Hillside Dr", "Broadway", "Maple Ave", "Elm St", "Washington St",
)  # fmt: skip
TAGS = (
    "newsletter", "wellness", "401k", "cobra", "open-enrollment", "hsa", "webinar-attendee",
    "trade-show", "referral", "multi-state", "union", "seasonal-workforce",
)  # fmt: skip
TITLES = [
    "HR Director", "Benefits Manager", "CFO", "HR Generalist", "Office Manager",
    "Payroll Administrator", "VP of People", "Controller", "Owner", "COO",
]  # fmt: skip
FIRST_NAMES = (
    "Pat", "Dana", "Alex", "Jordan", "Morgan", "Casey", "Riley", "Taylor", "Jamie", "Avery",
    "Maria", "James", "Linda", "Robert", "Susan", "Michael", "Karen", "David", "Emily", "Daniel",
    "Grace", "Samuel", "Olivia", "Henry", "Priya", "Wei", "Aisha", "Carlos", "Hannah", "Kenji",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Johnson", "Lee", "Garcia", "Brown", "Nguyen", "Patel", "Miller", "Davis", "Wilson",
    "Anderson", "Thomas", "Martinez", "Clark", "Lewis", "Walker", "Young", "Allen", "King",
    "Wright", "Scott", "Hill", "Green", "Adams", "Baker", "Nelson", "Carter", "Mitchell", "Reyes",
    "O'Brien",
)  # fmt: skip
FIRST_NAMES_INTL = (
    "José",
    "Zoë",
    "François",
    "Søren",
    "Łukasz",
    "Chloé",
    "Björn",
    "Renée",
    "Ana Lucía",
)
LAST_NAMES_INTL = (
    "Müller",
    "Núñez",
    "Ngô",
    "Dvořák",
    "Ødegaard",
    "García-López",
    "Çelik",
    "Kowalczyk",
)
#: Letters that NFKD does not reduce to ASCII.
NON_DECOMPOSING = str.maketrans({"ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "ß": "ss", "'": ""})
#: (username, display name, email, phone): the account managers sample data assigns.
ACCOUNT_MANAGERS = [
    ("am.rivera", "Dana Rivera", "dana.rivera@cpi.example", "541-555-0101"),
    ("am.chen", "Wei Chen", "wei.chen@cpi.example", "541-555-0102"),
    ("am.okafor", "Ngozi Okafor", "ngozi.okafor@cpi.example", "541-555-0103"),
    ("am.larsen", "Erik Larsen", "erik.larsen@cpi.example", "541-555-0104"),
    ("am.morales", "Lucía Morales", "lucia.morales@cpi.example", "541-555-0105"),
    ("am.brooks", "Tanya Brooks", "tanya.brooks@cpi.example", "541-555-0106"),
]  # fmt: skip
