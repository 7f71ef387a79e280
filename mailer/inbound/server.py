"""Unsubscribes by email: the `mailto:` half of every List-Unsubscribe header.

A mail client that cannot POST (RFC 8058) sends a message to MAILTO_ADDRESS with the subject
`unsubscribe-TOKEN`; `InboundServer` (`mailer inbound`) receives it and records the opt-out
exactly as the one-click page does, with source `mailto`. A forged or unknown token changes
nothing, and the reply never says which it was.

The same server takes bounce and complaint reports (`mailer.inbound.bounces`) sent to the VERP
addresses `local+<token>@domain` of MAILER_ENVELOPE_SENDER, and to that address itself (where
feedback loops and pre-VERP bounces arrive). Every other recipient, and a VERP address
whose token we did not make, is refused at RCPT; a message takes at most MAX_RECIPIENTS.
Each message is parsed once, in a worker thread, so a costly one never stalls the others.
"""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy.exc import SQLAlchemyError

from mailer.consent import opt_out
from mailer.enums import Category, OptOutSource
from mailer.errors import NotFoundError, TokenError
from mailer.inbound.bounces import apply_events
from mailer.inbound.reports import parse_report
from mailer.messages.builder import verp_parts
from mailer.runtime import Runtime
from mailer.tokens import TokenSigner

_log = logging.getLogger(__name__)

#: A token as TokenSigner makes it: base64url payload, a dot, base64url MAC.
_TOKEN = re.compile(r"unsubscribe-([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")
#: Messages larger than this are not unsubscribe requests.
MAX_MESSAGE_BYTES = 256 * 1024
#: Bounces may quote the whole original message; larger reports are refused.
MAX_REPORT_BYTES = 1024 * 1024
#: Recipients one report may be addressed to (a genuine DSN names one VERP address).
MAX_RECIPIENTS = 10


def unsubscribe_by_mail(rt: Runtime, data: bytes, *, ip: str) -> bool:
    """Record the opt-out a mailto unsubscribe asks for; False when it names nobody we know."""
    headers = BytesParser(policy=default_policy).parsebytes(data, headersonly=True)
    match = _TOKEN.search(str(headers.get("Subject", "")))
    if match is None:
        return False
    try:
        token = TokenSigner(rt.settings).read(match.group(1))
    except TokenError:
        return False
    if not Category(token.category).allows_opt_out:
        return False
    with rt.sessions.begin() as session:
        try:
            opt_out(
                session,
                contact_id=token.contact_id,
                scope=token.category,
                source=OptOutSource.MAILTO,
                ip=ip,
                # not the sender's address: the opt-out row outlives the contact
                user_agent="mailto",
                send_id=token.send_id or None,
                actor="recipient",
            )
        except NotFoundError:
            return False
    return True


class _Handler:
    def __init__(self, rt: Runtime, pool: ThreadPoolExecutor) -> None:
        self.rt = rt
        self.pool = pool
        self.signer = TokenSigner(rt.settings)
        self.address = rt.settings.unsubscribe_mailto.lower()
        self.prefix, self.suffix = (p.lower() for p in verp_parts(rt.settings.envelope_sender))
        self.bounce_address = rt.settings.envelope_sender.lower()

    def is_bounce_address(self, address: str) -> bool:
        """The bare bounce address, or a VERP address whose token we made."""
        address = address.lower()
        if address == self.bounce_address:
            return True
        if not (address.startswith(self.prefix) and address.endswith(self.suffix)):
            return False
        token = address[len(self.prefix) : len(address) - len(self.suffix)]
        try:
            self.signer.read_bounce(token)  # one HMAC: cheap enough to check every RCPT
        except TokenError:
            return False
        return True

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.lower() != self.address and not self.is_bounce_address(address):
            return "550 5.1.1 This server takes unsubscribe requests and bounce reports only"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return f"452 4.5.3 Too many recipients (at most {MAX_RECIPIENTS} per message)"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or b""
        is_unsubscribe = any(a.lower() == self.address for a in envelope.rcpt_tos)
        if is_unsubscribe and len(data) > MAX_MESSAGE_BYTES:
            return "552 5.3.4 Message too big for an unsubscribe request"
        ip = str((session.peer or ("",))[0])
        rcpts = list(envelope.rcpt_tos)
        # parsing and database writes in a small pool of threads, never on the loop that
        # answers every other connection
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self.process, data, rcpts, ip)

    def process(self, data: bytes, rcpts: list[str], ip: str) -> str:
        """Handle one message for its (already checked) recipients; the reply to DATA."""
        bounce_rcpts = [a for a in rcpts if a.lower() != self.address]
        is_unsubscribe = len(bounce_rcpts) < len(rcpts)
        try:
            events = parse_report(data) if bounce_rcpts else []  # once, for every recipient
            for rcpt in bounce_rcpts:
                for applied in apply_events(self.rt, events, envelope_rcpt=rcpt):
                    if applied.reason:
                        _log.info("report event ignored: %s", applied.reason)
            if is_unsubscribe:
                unsubscribe_by_mail(self.rt, data, ip=ip)
        except SQLAlchemyError:
            # nothing was recorded (each report is one transaction): the sender retries
            return "451 4.3.0 Temporary failure, please try again later"
        # the same answer whether or not the token was good: it reveals nobody
        if not is_unsubscribe:
            return "250 2.0.0 Report received"
        return "250 2.0.0 Unsubscribe request received"


class InboundServer:
    """An SMTP server for unsubscribe mail and bounce reports (see above); start() and stop()."""

    def __init__(self, rt: Runtime, *, host: str = "127.0.0.1", port: int = 2526) -> None:
        #: Two threads: reports are rare; a flood of them waits its turn instead of taking the CPU.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="inbound")
        self._controller = Controller(
            _Handler(rt, self._pool),
            hostname=host,
            port=port,
            server_hostname=rt.settings.mail_domain,
            data_size_limit=MAX_REPORT_BYTES,
        )

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def start(self) -> InboundServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()
        self._pool.shutdown(wait=True)
