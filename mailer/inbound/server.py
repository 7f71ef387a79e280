"""Unsubscribes by email: the `mailto:` half of every List-Unsubscribe header.

A mail client that cannot POST (RFC 8058) sends a message to MAILTO_ADDRESS with the subject
`unsubscribe-TOKEN`; `InboundServer` (`mailer inbound`) receives it and records the opt-out
exactly as the one-click page does, with source `mailto`. A forged or unknown token changes
nothing, and the reply never says which it was.

The same server takes bounce and complaint reports (`mailer.inbound.bounces`) sent to the VERP
addresses `local+<token>@domain` of MAILER_ENVELOPE_SENDER, and to that address itself (where
feedback loops and pre-VERP bounces arrive). Every other recipient is refused.
"""

from __future__ import annotations

import re
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy.exc import SQLAlchemyError

from mailer.consent import opt_out
from mailer.enums import Category, OptOutSource
from mailer.errors import NotFoundError, TokenError
from mailer.inbound.bounces import process_report
from mailer.messages.builder import verp_parts
from mailer.runtime import Runtime
from mailer.tokens import TokenSigner

#: A token as TokenSigner makes it: base64url payload, a dot, base64url MAC.
_TOKEN = re.compile(r"unsubscribe-([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")
#: Messages larger than this are not unsubscribe requests.
MAX_MESSAGE_BYTES = 256 * 1024
#: Bounces may quote the whole original message; larger reports are refused.
MAX_REPORT_BYTES = 1024 * 1024


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
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.address = rt.settings.unsubscribe_mailto.lower()
        prefix, suffix = verp_parts(rt.settings.envelope_sender)
        self.bounce_address = rt.settings.envelope_sender.lower()
        self.verp = re.compile(
            re.escape(prefix.lower()) + r"[0-9a-z-]{1,80}" + re.escape(suffix.lower())
        )

    def is_bounce_address(self, address: str) -> bool:
        address = address.lower()
        return address == self.bounce_address or self.verp.fullmatch(address) is not None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.lower() != self.address and not self.is_bounce_address(address):
            return "550 5.1.1 This server takes unsubscribe requests and bounce reports only"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or b""
        bounce_rcpts = [a for a in envelope.rcpt_tos if self.is_bounce_address(a)]
        is_unsubscribe = any(a.lower() == self.address for a in envelope.rcpt_tos)
        if is_unsubscribe and len(data) > MAX_MESSAGE_BYTES:
            return "552 5.3.4 Message too big for an unsubscribe request"
        ip = (session.peer or ("",))[0]
        # short database writes on the server's loop: this mail is rare and small
        try:
            for rcpt in bounce_rcpts:
                process_report(self.rt, data, envelope_rcpt=rcpt)
            if is_unsubscribe:
                unsubscribe_by_mail(self.rt, data, ip=str(ip))
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
        self._controller = Controller(
            _Handler(rt),
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
