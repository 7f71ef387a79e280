"""Mail that comes back: bounce and complaint reports, and unsubscribe requests by mail.

- `reports`: DSN and ARF bytes → `BounceEvent`s (parsing only);
- `bounces`: the send each event is about, and what it changes (suppression, opt-outs);
- `server`: `InboundServer`, the SMTP server of `mailer inbound` that takes both.
"""

from mailer.inbound.bounces import Applied, apply_events, process_report
from mailer.inbound.reports import BounceEvent, parse_report
from mailer.inbound.server import InboundServer, unsubscribe_by_mail

__all__ = [
    "Applied",
    "BounceEvent",
    "InboundServer",
    "apply_events",
    "parse_report",
    "process_report",
    "unsubscribe_by_mail",
]
