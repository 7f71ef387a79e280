"""The module `dramatiq` loads in worker processes (`mailer worker` runs it for you)."""

from mailer.config import Settings
from workers.actors import setup

wiring = setup(Settings.from_env())
