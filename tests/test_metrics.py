"""`/metrics` scraped over HTTP from the app under uvicorn and read with prometheus_client's own
parser; only loopback clients or the bearer token get it (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from mailer.config import Secret
from mailer.models import Campaign, DeliveryEvent, Heartbeat, Send, utcnow
from mailer.runtime import Runtime
from mailer.transports.capture import free_port
from mailer.web import create_app
from tests.delivery_fixtures import REDIS_URL

TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture
def metrics_rt(rt: Runtime) -> Runtime:
    settings = rt.settings.with_(
        metrics_token=Secret(TOKEN),
        trusted_proxy=True,
        broker_url=REDIS_URL,
        broker_namespace=f"mailer-test-{uuid.uuid4().hex[:8]}",
    )
    return Runtime(settings, rt.engine, rt.sessions)


@pytest.fixture
def base_url(metrics_rt: Runtime) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime=metrics_rt), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_show_sends_campaigns_processes_events_and_queues(
    metrics_rt: Runtime, base_url: str
) -> None:
    now = utcnow()
    with metrics_rt.sessions.begin() as s:
        campaign = Campaign(
            name="m", category="promotions", template="x", created_by="t", status="sending"
        )
        s.add(campaign)
        s.flush()
        rows = [
            {
                "campaign_id": campaign.id,
                "category": "promotions",
                "email": f"r{n}@x.example",
                "status": "sent" if n < 7 else "deferred",
            }
            for n in range(10)
        ]
        s.execute(insert(Send), rows)
        s.add(
            Heartbeat(
                name="worker:h1:11", kind="worker", host="h1", pid=11, started_at=now, seen_at=now
            )
        )
        s.add(
            Heartbeat(
                name="scheduler:h1:12",
                kind="scheduler",
                host="h1",
                pid=12,
                started_at=now,
                seen_at=now,
            )
        )
        s.add(DeliveryEvent(source="ses", event_key="e1", kind="complaint", at=now, detail=""))
    answer = httpx.get(f"{base_url}/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples = _samples(answer.text)
    assert samples[("mailer_sends", (("category", "promotions"), ("status", "sent")))] == 7
    assert samples[("mailer_sends", (("category", "promotions"), ("status", "deferred")))] == 3
    assert samples[("mailer_campaigns", (("status", "sending"),))] == 1
    assert samples[("mailer_processes_alive", (("kind", "worker"),))] == 1
    assert samples[("mailer_last_sweep_age_seconds", ())] < 60
    assert (
        samples[("mailer_delivery_events_total", (("kind", "complaint"), ("source", "ses")))] == 1
    )
    assert samples[("mailer_broker_up", ())] == 1
    assert samples[("mailer_queue_depth", (("queue", "bulk"), ("state", "waiting")))] == 0


def test_metrics_are_refused_to_others_without_the_token(base_url: str) -> None:
    outside = {"X-Forwarded-For": "203.0.113.9"}
    assert httpx.get(f"{base_url}/metrics", headers=outside).status_code == 404
    wrong = {**outside, "Authorization": "Bearer guess"}
    assert httpx.get(f"{base_url}/metrics", headers=wrong).status_code == 404
    right = {**outside, "Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{base_url}/metrics", headers=right).status_code == 200
