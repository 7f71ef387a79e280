"""Unsubscribes by email: the `mailto:` half of every List-Unsubscribe header.

A mail client that cannot POST (RFC 8058) sends a message to MAILTO_ADDRESS with the subject
`unsubscribe-TOKEN`; `InboundServer` (`mailer inbound`) receives it and records the opt-out
exactly as the one-click page does, with source `mailto`. A forged or unknown token changes
nothing, and the reply never says which it was.
"""

from __future__ import annotations

import re
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller

from mailer.consent import opt_out
from mailer.enums import Category, OptOutSource
from mailer.errors import NotFoundError, TokenError
from mailer.runtime import Runtime
from mailer.tokens import TokenSigner

#: A token as TokenSigner makes it: base64url payload, a dot, base64url MAC.
_TOKEN = re.compile(r"unsubscribe-([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")
#: Messages larger than this are not unsubscribe requests.
MAX_MESSAGE_BYTES = 256 * 1024


def unsubscribe_by_mail(rt: Runtime, data: bytes, *, mail_from: str, ip: str) -> bool:
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
                user_agent=f"mailto from {mail_from}"[:200],
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

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.lower() != self.address:
            return "550 5.1.1 This server takes unsubscribe requests only"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or b""
        if len(data) > MAX_MESSAGE_BYTES:
            return "552 5.3.4 Message too big for an unsubscribe request"
        ip = (session.peer or ("",))[0]
        # a short database write on the server's loop: unsubscribe mail is rare and small
        unsubscribe_by_mail(self.rt, data, mail_from=envelope.mail_from or "", ip=str(ip))
        # the same answer whether or not the token was good: it reveals nobody
        return "250 2.0.0 Unsubscribe request received"


class InboundServer:
    """An SMTP server that takes mail to settings.unsubscribe_mailto; start() and stop()."""

    def __init__(self, rt: Runtime, *, host: str = "127.0.0.1", port: int = 2526) -> None:
        self._controller = Controller(
            _Handler(rt),
            hostname=host,
            port=port,
            server_hostname=rt.settings.mail_domain,
            data_size_limit=MAX_MESSAGE_BYTES,
        )

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def start(self) -> InboundServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()
