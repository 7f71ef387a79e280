"""Operator alerts: raised once per cause, then mailed and/or posted as JSON.

An alert is a row whose `key` names its cause (`complaint-rate:42`, `paused:42:<audit id>`,
`policy-burst:42`, `scheduler-silent:<last sweep>`): raising the same cause again changes
nothing, so a burst of 5.7.x replies is one alert, not one per message. Raising happens in the
transaction that found the cause; delivery happens after it committed (`deliver_pending`), by
whichever process raised it or by the next scheduler sweep, and an alert that could not be
delivered is tried again (at most `MAX_ATTEMPTS` times).

Where alerts go: `MAILER_ALERT_EMAIL` (through the first relay of `MAILER_SMTP_URL`) and/or
`MAILER_ALERT_WEBHOOK_URL` (a JSON POST: key, kind, subject, body, details, raised_at). With
neither set, alerts are only logged and kept in the table.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import smtplib
import urllib.request
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.db import insert_ignoring_duplicates, rows_changed
from mailer.models import Alert, AuditEvent, Campaign, Heartbeat, utcnow
from mailer.runtime import Runtime

_log = logging.getLogger("mailer.alerts")

#: An alert that failed this many deliveries is left in the table (and the log) for good.
MAX_ATTEMPTS = 10
#: How far back the scan looks for campaigns that paused themselves.
_PAUSE_LOOKBACK = dt.timedelta(days=1)
#: The webhook and the relay get this long to answer.
_TIMEOUT_S = 10.0


def raise_alert(
    session: Session,
    *,
    key: str,
    kind: str,
    subject: str,
    body: str,
    now: dt.datetime | None = None,
    **details: Any,
) -> bool:
    """Record an alert for a cause unless one was raised for it already; True if new."""
    table = cast(Table, Alert.__table__)
    before = session.scalar(select(Alert.id).where(Alert.key == key))
    if before is not None:
        return False
    insert_ignoring_duplicates(
        session,
        table,
        [
            {
                "key": key[:200],
                "kind": kind,
                "subject": subject[:300],
                "body": body,
                "details": details,
                "raised_at": now or utcnow(),
                "attempts": 0,
                "last_error": "",
            }
        ],
    )
    _log.warning("alert: %s", subject)
    return True


def scan(session: Session, settings: Settings, now: dt.datetime) -> int:
    """Raise the alerts that the database shows a cause for; returns how many are new.

    Campaigns that paused themselves (a pause by the system, not already alerted by the
    rate check) and campaigns with a burst of 5.7.x rejections. (A silent scheduler is
    watched by the workers: `check_scheduler`.)
    """
    new = 0
    pauses = _self_pauses(session, now)
    for event_id, campaign_id, name, detail in pauses:
        new += raise_alert(
            session,
            key=f"paused:{campaign_id}:{event_id}",
            kind="campaign-paused",
            subject=f"campaign {campaign_id} ({name}) paused itself",
            body=f"Campaign {campaign_id} ({name}) paused itself: {detail}",
            now=now,
            campaign_id=campaign_id,
        )
    new += _policy_bursts(session, settings, now)
    return new


def _self_pauses(session: Session, now: dt.datetime) -> list[tuple[int, int, str, str]]:
    events = session.scalars(
        select(AuditEvent).where(
            AuditEvent.action == "campaign.pause",
            AuditEvent.actor == "system",
            AuditEvent.at >= now - _PAUSE_LOOKBACK,
        )
    ).all()
    found = []
    for event in events:
        if (event.details or {}).get("alerted"):
            continue
        campaign_id = int(event.object_id)
        name = session.scalar(select(Campaign.name).where(Campaign.id == campaign_id)) or "?"
        found.append((event.id, campaign_id, name, str((event.details or {}).get("detail", ""))))
    return found


def _policy_bursts(session: Session, settings: Settings, now: dt.datetime) -> int:
    # late import: the delivery package imports this module through the rates check
    from mailer.delivery.results import count_policy_failures

    new = 0
    open_campaigns = session.execute(
        select(Campaign.id, Campaign.name).where(Campaign.status.in_(("sending", "paused")))
    ).all()
    for campaign_id, name in open_campaigns:
        key = f"policy-burst:{campaign_id}"
        if session.scalar(select(Alert.id).where(Alert.key == key)) is not None:
            continue
        failures = count_policy_failures(session, campaign_id)
        if failures >= settings.alert_policy_failures:
            new += raise_alert(
                session,
                key=key,
                kind="policy-burst",
                subject=f"campaign {campaign_id} ({name}): {failures} 5.7.x rejections",
                body=(
                    f"Campaign {campaign_id} ({name}) has had {failures} sender-side "
                    "rejections (5.7.x: authentication or policy). Check DKIM, SPF, DMARC and "
                    "the relay's credentials; the recipients are not at fault."
                ),
                now=now,
                campaign_id=campaign_id,
                failures=failures,
            )
    return new


def check_scheduler(
    session: Session, settings: Settings, now: dt.datetime, *, watching_since: dt.datetime
) -> int:
    """Raise an alert when no scheduler has swept for `alert_scheduler_silence_s` (or, when
    none ever did, since the watcher started that long ago)."""
    last = session.scalar(
        select(Heartbeat.seen_at)
        .where(Heartbeat.kind == "scheduler")
        .order_by(Heartbeat.seen_at.desc())
        .limit(1)
    )
    reference = last if last is not None else watching_since
    if (now - reference).total_seconds() < settings.alert_scheduler_silence_s:
        return 0
    since = f"{last:%Y-%m-%dT%H:%M:%SZ}" if last is not None else "never"
    return int(
        raise_alert(
            session,
            key=f"scheduler-silent:{since}",
            kind="scheduler-silent",
            subject=f"no scheduler has swept since {since}",
            body=(
                f"No `mailer scheduler` has swept since {since}: scheduled campaigns do not "
                "start, deferred mail is not retried and crashed workers' sends are not "
                "recovered. Start one (systemctl start mailer-scheduler) and check its log."
            ),
            now=now,
            last_sweep=since,
        )
    )


def deliver_pending(rt: Runtime) -> int:
    """Send every alert not yet delivered; returns how many went out. Never raises."""
    settings = rt.settings
    sent = 0
    try:
        with rt.sessions() as session:
            pending = session.execute(
                select(Alert.id, Alert.attempts)
                .where(Alert.sent_at.is_(None), Alert.attempts < MAX_ATTEMPTS)
                .order_by(Alert.id)
            ).all()
        for alert_id, attempts in pending:
            sent += _deliver_one(rt, settings, alert_id, attempts)
    except Exception:
        _log.exception("could not deliver alerts; the next sweep tries again")
    return sent


def _deliver_one(rt: Runtime, settings: Settings, alert_id: int, attempts: int) -> int:
    with rt.sessions.begin() as session:
        # compare-and-set on attempts: of two processes delivering at once, one sends
        claimed = rows_changed(
            session.execute(
                update(Alert)
                .where(Alert.id == alert_id, Alert.attempts == attempts, Alert.sent_at.is_(None))
                .values(attempts=attempts + 1)
            )
        )
        if not claimed:
            return 0
        alert = session.get(Alert, alert_id)
        assert alert is not None
        payload = {
            "key": alert.key,
            "kind": alert.kind,
            "subject": alert.subject,
            "body": alert.body,
            "details": alert.details,
            "raised_at": alert.raised_at.isoformat(),
        }
    errors = []
    if settings.alert_email:
        try:
            _mail(settings, payload)
        except Exception as exc:  # any failure is kept on the row and tried again
            errors.append(f"mail to {settings.alert_email}: {type(exc).__name__}: {exc}")
    if settings.alert_webhook_url:
        try:
            _post(settings.alert_webhook_url, payload)
        except Exception as exc:
            errors.append(f"POST {settings.alert_webhook_url}: {type(exc).__name__}: {exc}")
    with rt.sessions.begin() as session:
        values: dict[str, Any] = {"last_error": "; ".join(errors)[:2000]}
        if not errors:
            values["sent_at"] = utcnow()
        session.execute(update(Alert).where(Alert.id == alert_id).values(**values))
    if errors:
        _log.warning("alert %s not delivered: %s", payload["key"], "; ".join(errors))
        return 0
    return 1


def _mail(settings: Settings, payload: dict[str, Any]) -> None:
    from mailer.transports.relays import parse_relays

    if settings.smtp_url.startswith("capture://"):
        raise RuntimeError("MAILER_SMTP_URL is capture://: alerts need a real relay")
    relay = parse_relays(settings.smtp_url)[0]
    message = EmailMessage()
    message["From"] = settings.company_from
    message["To"] = settings.alert_email
    message["Subject"] = f"[mailer alert] {payload['subject']}"
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=settings.mail_domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(f"{payload['body']}\n\nalert key: {payload['key']}\n")
    smtp_class = smtplib.SMTP_SSL if relay.is_implicit_tls else smtplib.SMTP
    kwargs: dict[str, Any] = {"timeout": _TIMEOUT_S}
    if relay.is_implicit_tls:
        kwargs["context"] = relay.tls_context()
    with smtp_class(relay.host, relay.port, **kwargs) as smtp:
        smtp.ehlo(settings.smtp_local_hostname)
        if (
            not relay.is_implicit_tls
            and relay.starttls is not False
            and (relay.starttls or smtp.has_extn("starttls"))
        ):
            smtp.starttls(context=relay.tls_context(is_opportunistic=relay.starttls is None))
            smtp.ehlo(settings.smtp_local_hostname)
        if relay.has_credentials:
            smtp.login(relay.username, relay.password)
        smtp.send_message(message, from_addr=settings.envelope_sender)


def _post(url: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "mailer-alerts"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        if not 200 <= response.status < 300:
            raise RuntimeError(f"answered {response.status}")
