"""RabbitMQ as the broker: queue names under the namespace, depths read from the broker, and
priority batches taken before bulk ones."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from mailer.config import Settings
from tests.delivery_fixtures import RABBITMQ_URL, delete_rabbitmq_queues


@pytest.fixture
def rabbit_settings() -> Iterator[Settings]:
    settings = Settings(broker_url=RABBITMQ_URL, broker_namespace=f"t{uuid.uuid4().hex[:8]}")
    yield settings
    delete_rabbitmq_queues(settings)


def test_batches_wait_in_the_namespaced_queues_and_their_depths_are_read(
    rabbit_settings: Settings,
) -> None:
    from workers.actors import Wiring
    from workers.broker import queue_depths, queue_names

    wiring = Wiring(rabbit_settings)
    try:
        assert queue_names(rabbit_settings) == (
            f"{rabbit_settings.broker_namespace}.priority",
            f"{rabbit_settings.broker_namespace}.bulk",
        )
        assert queue_depths(rabbit_settings)["bulk"]["waiting"] == 0
        for first in (1, 11, 21):
            wiring.bulk.send(7, first, first + 9)
        wiring.priority.send(8, 1, 5)
        depths = queue_depths(rabbit_settings)
        assert depths["bulk"]["waiting"] == 3
        assert depths["priority"]["waiting"] == 1
    finally:
        wiring.broker.close()
