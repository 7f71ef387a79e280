"""Campaign delivery: planning the send log, delivering batches, recording results, sweeping.

The entry points (`workers/`, the CLI) pass in a `dispatch` callable that enqueues batches;
nothing here imports the broker. The delivery engine (`deliver.py`: transports, the message
builder) is imported on first use (`mailer.lazy`): planning and enqueueing do not need it, and
worker processes import it at start (`workers/process.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailer.delivery.batches import Batch, Dispatch, batches_for
from mailer.delivery.journal import Journal
from mailer.delivery.sweep import TickReport, scheduler_tick
from mailer.lazy import lazy_exports

if TYPE_CHECKING:
    from mailer.delivery.deliver import DeliveryContext, deliver_batch

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

__getattr__ = lazy_exports(
    __name__, {"mailer.delivery.deliver": ["DeliveryContext", "deliver_batch"]}
)
