"""Campaign delivery: planning the send log, delivering batches, recording results, sweeping.

The entry points (`workers/`, the CLI) pass in a `dispatch` callable that enqueues batches;
nothing here imports the broker.
"""

from mailer.delivery.batches import Batch, Dispatch, batches_for
from mailer.delivery.deliver import DeliveryContext, deliver_batch
from mailer.delivery.journal import Journal
from mailer.delivery.sweep import TickReport, scheduler_tick

__all__ = [
    "Batch",
    "DeliveryContext",
    "Dispatch",
    "Journal",
    "TickReport",
    "batches_for",
    "deliver_batch",
    "scheduler_tick",
]
