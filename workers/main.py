"""The module `dramatiq` loads in worker processes (`mailer worker` runs it for you)."""

import mailer.delivery.deliver  # noqa: F401  (loaded at start, not on the first batch)
from mailer.config import Settings
from workers.actors import setup

wiring = setup(Settings.from_env())
wiring.prepare()
