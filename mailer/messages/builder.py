"""One campaign's messages, built from a skeleton prepared once (docs/performance.md §3: ~37×
faster than `EmailMessage`). Per recipient only the links, the recipient's values in the three
parts (rendered once per campaign, `split.py`), To, Subject, Date and Message-ID are made;
everything else is bytes computed in `__init__`. Bodies go 8bit, quoted-printable only where
they must (`CampaignMessages._encode`, `OutgoingMessage.downgrade`).

Senders by category (docs/standards.md §2: the From domain must align with DKIM d=):
- features, promotions: From `settings.marketing_from`; Reply-To the sender's reply_to if set.
- service: From the account manager (the campaign's sender) when their address is under
  `settings.mail_domain`, so From stays aligned; otherwise "<name> via <company>" at the
  company address. Reply-To is the manager either way, so replies reach a person.
- policy: From `settings.company_from`, no List-Unsubscribe (mandatory notice).
`Auto-Submitted: auto-generated` goes on policy and service mail: both go to many people at
once, and an out-of-office reply to every one of them helps nobody (RFC 3834 §5).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import secrets
import time
from email.utils import formatdate
from functools import partial
from typing import Any

from mailer.config import Secret, Settings
from mailer.enums import Category
from mailer.errors import ConfigError, TemplateError
from mailer.messages import headers as h
from mailer.messages.context import (
    CampaignInfo,
    CampaignView,
    CompanyView,
    LinksView,
    PolicyView,
    Recipient,
    SenderIdentity,
    SenderView,
    policy_view,
    recipient_views,
)
from mailer.messages.dkim import DkimSigner
from mailer.messages.environment import render_budget
from mailer.messages.split import CRLF, BoundSplit, crlf_body
from mailer.messages.templates import Template
from mailer.outgoing import OutgoingMessage
from mailer.tokens import PreparedHmac, TokenSigner

#: RFC 5322 §2.1.1: no line longer than this, CRLF excluded.
MAX_LINE_OCTETS = 998
_7BIT = b"Content-Transfer-Encoding: 7bit\r\n\r\n"
_8BIT = b"Content-Transfer-Encoding: 8bit\r\n\r\n"
_QP = b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
#: Subject headers kept per campaign: a subject usually varies with the organization only, so
#: most messages find theirs (folding and encoding it is ~10 % of a message's build).
SUBJECT_CACHE_SIZE = 1024

#: List-Id per category (RFC 2919): stable per stream, whatever the campaign.
LIST_IDS = {
    Category.FEATURES: ("CPI product features", "features"),
    Category.PROMOTIONS: ("CPI promotions", "promotions"),
    Category.SERVICE: ("CPI service notices", "service"),
    Category.POLICY: ("CPI privacy notices", "privacy"),
}


class CampaignMessages:
    """Builds every message of one campaign; make one per campaign per worker."""

    def __init__(
        self,
        settings: Settings,
        *,
        template: Template,
        campaign: CampaignInfo,
        sender: SenderIdentity,
        params: dict[str, Any] | None = None,
    ) -> None:
        category = Category(campaign.category)
        if template.category is not category:
            raise TemplateError(
                template.name,
                f"is a {template.category.value} template; campaign {campaign.id} is {category}",
            )
        self._template = template
        self._category = category
        self._campaign_id = campaign.id
        self._signer = TokenSigner(settings)
        self._base_url = settings.public_base_url.rstrip("/")
        self._mailto = settings.unsubscribe_mailto
        # VERP (docs/standards.md §6): `local+<token>@domain`, the token naming the send, so an
        # asynchronous bounce leads back to it; the prefix and suffix are made once here.
        self._verp_prefix, self._verp_suffix = verp_parts(settings.envelope_sender)
        self._mail_domain = settings.mail_domain
        self._msgid_mac = PreparedHmac(_message_id_key(settings.secret_key))
        self._render_budget_s = settings.template_render_budget_s
        # QP output never contains "=_" (a literal "=" is always =3D), so a QP body cannot hold
        # it; an 8bit body that does goes quoted-printable (`_encode`).
        self._boundary = f"=_mailer_{secrets.token_hex(12)}".encode()
        policy = (
            policy_view(params or {}, self._base_url)
            if category is Category.POLICY
            else PolicyView()
        )
        self._policy_url = policy.url or f"{self._base_url}/privacy"
        self._shared: dict[str, Any] = {
            "company": CompanyView(
                settings.company_name,
                settings.postal_address,
                settings.company_website.rstrip("/"),
            ),
            "campaign": CampaignView(campaign.id, campaign.name, category.value),
            "sender": SenderView(sender.name, sender.email, sender.phone),
            "policy": policy,
            # only what the template declares: the static check vouched for exactly these
            "params": {name: str((params or {}).get(name, "")) for name in template.params},
        }
        self._from = self._from_block(settings, sender)
        # A subject without Jinja (a policy notice's, say) is encoded once, not per message.
        is_fixed = "{" not in template.subject_source
        self._fixed_subject = template.subject_source if is_fixed else ""
        self._fixed_subject_header = (
            h.unstructured("Subject", self._fixed_subject) if is_fixed else b""
        )
        self._subject_headers: dict[str, bytes] = {}
        self._has_opt_out = category.allows_opt_out
        self._unsubscribe_url = f"{self._base_url}/u/"
        self._preferences_url = f"{self._base_url}/preferences/"
        self._mailto_prefix = f"<mailto:{self._mailto}?subject=unsubscribe-"
        self._constant = self._constant_block(settings)
        # Rendered once here: the parts' constant text, into which each message puts its values.
        # A campaign part that fails or runs past the budget leaves its part rendered whole, so
        # each message fails with the reason, as it would without the split.
        with render_budget(self._render_budget_s):
            self._splits = tuple(
                None if split is None else split.bind(self._shared)
                for split in (template.subject_split, template.text_split, template.html_split)
            )
        self._needs_budget = any(s is None or s.has_loops for s in self._splits[1:]) or (
            not self._fixed_subject and (self._splits[0] is None or self._splits[0].has_loops)
        )
        # A body at most this long cannot hold a line over 998 octets (split.line_bounds).
        self._safe_lengths = tuple(
            MAX_LINE_OCTETS if s is None else MAX_LINE_OCTETS + s.fewest_octets - s.longest_line
            for s in self._splits[1:]
        )
        self._dkim = DkimSigner.from_settings(settings, self._signed_header_names())
        self._date_s = -1
        self._date = b""

    # ---- the skeleton, once per campaign -------------------------------------------------

    def _from_block(self, settings: Settings, sender: SenderIdentity) -> bytes:
        category = self._category
        reply_to = sender.reply_to
        if category.is_marketing:
            display, address = h.parse_mailbox(settings.marketing_from)
        elif category is Category.POLICY:
            display, address = h.parse_mailbox(settings.company_from)
        elif sender.email and _aligned(sender.email, settings.mail_domain):
            display, address = sender.name, sender.email
            reply_to = reply_to or sender.email
        else:
            company_display, address = h.parse_mailbox(settings.company_from)
            display = (
                f"{sender.name} via {settings.company_name}" if sender.name else company_display
            )
            reply_to = reply_to or sender.email or None
        block = h.mailbox("From", display, address)
        if reply_to:
            reply_display = sender.name if reply_to == sender.email else ""
            block += h.mailbox("Reply-To", reply_display, reply_to)
        return block

    def _constant_block(self, settings: Settings) -> bytes:
        label, list_id = LIST_IDS[self._category]
        org = settings.mail_domain.split(".")[0]
        lines = [
            b"MIME-Version: 1.0\r\n",
            h.fold(
                "List-Id", [*h.phrase_words(label), f"<{list_id}.lists.{settings.mail_domain}>"]
            ),
            h.fold(
                "Feedback-ID",
                [
                    f"c{self._campaign_id}:{self._category.value}:{org}:{settings.feedback_sender_id}"
                ],
            ),
        ]
        if self._category in (Category.POLICY, Category.SERVICE):
            lines.append(b"Auto-Submitted: auto-generated\r\n")
        return b"".join(lines)

    def _signed_header_names(self) -> list[str]:
        names = ["From", "Reply-To", "To", "Subject", "Date", "Message-ID", "MIME-Version"]
        names += ["Content-Type", "List-Id", "Feedback-ID"]
        if self._category.allows_opt_out:
            names += ["List-Unsubscribe", "List-Unsubscribe-Post"]
        if self._category in (Category.POLICY, Category.SERVICE):
            names.append("Auto-Submitted")
        if b"reply-to:" not in self._from.lower():
            names.remove("Reply-To")
        return [*names, "From"]  # over-sign From: a second From added later breaks the signature

    @property
    def split_parts(self) -> tuple[str, ...]:
        """The parts rendered once for the campaign, with only their recipient values
        rendered per message; the others render whole."""
        names = ("subject", "text", "html")
        return tuple(n for n, s in zip(names, self._splits, strict=True) if s is not None)

    # ---- per recipient -------------------------------------------------------------------

    def render_parts(self, recipient: Recipient) -> tuple[str, str, str]:
        """Subject, text and HTML for one recipient, rendered whole (previews, checks, and the
        oracle the split rendering of `build` is tested against)."""
        ctx, _, _ = self._context(recipient)
        with render_budget(self._render_budget_s):
            return self._render_whole(ctx)

    def _context(self, r: Recipient) -> tuple[dict[str, Any], str, str]:
        """The template context, the recipient's token and full name."""
        contact, organization, manager = recipient_views(r)
        token = self._signer.make(r.contact_id, self._category, r.send_id)
        links = LinksView(
            self._unsubscribe_url + token if self._has_opt_out else "",
            self._preferences_url + token,
            self._policy_url,
        )
        ctx = {
            **self._shared,
            "contact": contact,
            "organization": organization,
            "manager": manager,
            "links": links,
        }
        return ctx, token, contact.full_name

    def _render_whole(self, ctx: dict[str, Any]) -> tuple[str, str, str]:
        tpl = self._template
        subject = self._fixed_subject or _render(tpl, "subject", tpl.subject, ctx)
        return (
            subject,
            _render(tpl, "text part", tpl.text, ctx),
            _render(tpl, "HTML part", tpl.html, ctx),
        )

    def _render_split(self, ctx: dict[str, Any]) -> tuple[str, bytes, bytes]:
        """What `_render_whole` gives, the bodies as `crlf_body` bytes, from the campaign's
        constant text and each part's recipient-dependent values (split.py); parts that could
        not be split render whole."""
        tpl = self._template
        subject_split, text_split, html_split = self._splits
        return (
            self._fixed_subject or _render_part(tpl, "subject", subject_split, tpl.subject, ctx),
            _render_body(tpl, "text part", text_split, tpl.text, ctx),
            _render_body(tpl, "HTML part", html_split, tpl.html, ctx),
        )

    def build(self, recipient: Recipient) -> OutgoingMessage:
        """The complete message for one recipient; TemplateError if it cannot be rendered.

        Bodies go 8bit (7bit when ASCII): no quoted-printable per message. A part whose lines
        would pass 998 octets, or that holds a NUL, is quoted-printable instead; and `downgrade`
        gives the message with every 8bit part quoted-printable, for a relay without 8BITMIME.
        """
        r = recipient
        ctx, token, full_name = self._context(r)
        if self._needs_budget:
            with render_budget(self._render_budget_s):
                subject, text_body, html_body = self._render_split(ctx)
        else:  # no loop per recipient, nothing for the budget to watch
            subject, text_body, html_body = self._render_split(ctx)
        rcpt = h.check_address(r.email, f"To (send {r.send_id})")
        message_id = self._message_id(r.send_id)
        head = [
            self._from,
            h.fold("To", [*h.phrase_words(full_name), f"<{rcpt}>"]),  # rcpt is checked
            self._fixed_subject_header or self._subject_header(subject),
            self._date_header(),
            b"Message-ID: " + message_id.encode("ascii") + CRLF,
            self._constant,
        ]
        if self._has_opt_out:
            # two URIs, no space in either (the token is base64url)
            both = f"<{self._unsubscribe_url}{token}>, {self._mailto_prefix}{token}>"
            head.append(h.fold_spaced("List-Unsubscribe", both))
            head.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        text_part = self._encode(text_body, self._safe_lengths[0])
        html_part = self._encode(html_body, self._safe_lengths[1])
        data = self._assemble(head, text_part, html_part)
        is_8bit = text_part[0] is _8BIT or html_part[0] is _8BIT
        local = rcpt.rpartition("@")[0]
        return OutgoingMessage(
            send_id=r.send_id,
            mail_from=self._verp_prefix + self._signer.make_bounce(r.send_id) + self._verp_suffix,
            rcpt=rcpt,
            data=data,
            message_id=message_id,
            needs_smtputf8=r.needs_smtputf8 or not local.isascii(),
            downgrade=partial(self._downgraded, head, text_part, html_part) if is_8bit else None,
        )

    def _subject_header(self, subject: str) -> bytes:
        header = self._subject_headers.get(subject)
        if header is None:
            if len(self._subject_headers) >= SUBJECT_CACHE_SIZE:
                self._subject_headers.clear()
            header = self._subject_headers[subject] = h.unstructured("Subject", subject)
        return header

    def _encode(self, body: bytes, safe_length: int) -> tuple[bytes, bytes]:
        """(Content-Transfer-Encoding line, content) for one part's CRLF body: 7bit or 8bit
        as it is (RFC 6152), quoted-printable if a line would pass 998 octets (RFC 5322
        §2.1.1), if it holds a NUL, or if it holds the boundary (RFC 2046 §5.1.1)."""
        if (
            (len(body) > safe_length and _longest_line(body) > MAX_LINE_OCTETS)
            or b"\0" in body
            or self._boundary in body
        ):
            return _QP, _qp(body)
        return (_7BIT if body.isascii() else _8BIT), body

    def _assemble(
        self, head: list[bytes], text: tuple[bytes, bytes], html: tuple[bytes, bytes]
    ) -> bytes:
        boundary = self._boundary
        data = b"".join(
            [
                *head,
                b'Content-Type: multipart/alternative;\r\n boundary="' + boundary + b'"\r\n\r\n',
                b"--" + boundary + CRLF,
                b'Content-Type: text/plain; charset="utf-8"\r\n',
                text[0],
                text[1],
                b"\r\n--" + boundary + CRLF,
                b'Content-Type: text/html; charset="utf-8"\r\n',
                html[0],
                html[1],
                b"\r\n--" + boundary + b"--\r\n",
            ]
        )
        if self._dkim is not None:
            data = self._dkim.sign(data)
        return data

    def _downgraded(
        self, head: list[bytes], text: tuple[bytes, bytes], html: tuple[bytes, bytes]
    ) -> bytes:
        """The message again, its 8bit parts quoted-printable (and signed anew)."""
        parts = [(_QP, _qp(body)) if cte is _8BIT else (cte, body) for cte, body in (text, html)]
        return self._assemble(head, parts[0], parts[1])

    def _message_id(self, send_id: int) -> str:
        """Stable per send, so a retried send carries the same id; keyed, so not guessable."""
        left = f"{self._campaign_id}.{send_id}"
        return f"<{left}.{_message_id_mac(self._msgid_mac, left)}@{self._mail_domain}>"

    def _date_header(self) -> bytes:
        now = int(time.time())
        if now != self._date_s:  # formatdate costs more than the rest of the head
            self._date_s = now
            self._date = f"Date: {formatdate(now, usegmt=True)}\r\n".encode("ascii")
        return self._date


def _render_part(
    tpl: Template, part: str, split: BoundSplit | None, whole: Any, ctx: dict[str, Any]
) -> str:
    """One part from its campaign text and recipient values, or rendered whole."""
    if split is None:
        return _render(tpl, part, whole, ctx)
    try:
        return split.render(ctx)
    except Exception:
        _raise_with_lines(tpl, part, split.environment)
        raise


def _render_body(
    tpl: Template, part: str, split: BoundSplit | None, whole: Any, ctx: dict[str, Any]
) -> bytes:
    """`_render_part` as message-body bytes (`crlf_body`)."""
    if split is None:
        return crlf_body(_render(tpl, part, whole, ctx))
    try:
        return split.render_body(ctx)
    except Exception:
        _raise_with_lines(tpl, part, split.environment)
        raise


def _render(tpl: Template, part: str, compiled: Any, ctx: dict[str, Any]) -> str:
    # What Template.render does, minus merging the environment's globals into every context
    # (shared=True): the static check already refuses any name outside the context, so no
    # template can use a global, and the merge was ~15% of a message's render time.
    try:
        return "".join(compiled.root_render_func(compiled.new_context(ctx, shared=True)))
    except Exception:
        _raise_with_lines(tpl, part, compiled.environment)
        raise


def _raise_with_lines(tpl: Template, part: str, environment: Any) -> None:
    """Raise the exception being handled as this template's TemplateError, naming its line."""
    try:
        environment.handle_exception()  # re-raises with template lines
    except Exception as exc:  # any render failure is this template's, for this recipient
        raise tpl.error(part, exc) from exc


def _longest_line(body: bytes) -> int:
    return max(map(len, body.split(CRLF)))


def _qp(body: bytes) -> bytes:
    """Quoted-printable of a CRLF body, soft breaks at 76 (RFC 2045 §6.7)."""
    # b2a_qp is ~40% faster on LF input than on CRLF; its output has no other LF to confuse.
    return binascii.b2a_qp(body.replace(CRLF, b"\n"), istext=True).replace(b"\n", CRLF)


def _message_id_key(secret: Secret) -> bytes:
    return hmac.new(secret.reveal().encode(), b"mailer.message-id", hashlib.sha256).digest()


def _message_id_mac(mac: PreparedHmac, left: str) -> str:
    return mac.hexdigest(left.encode())[:16]


def read_message_id(settings: Settings, message_id: str) -> tuple[int, int] | None:
    """(campaign id, send id) of a Message-ID this builder made; None for any other.

    Bounce and complaint reports quote the original Message-ID; its MAC proves it is ours,
    under the current key or any of MAILER_OLD_SECRET_KEYS (mail sent before a rotation).
    """
    match = _OUR_MESSAGE_ID.fullmatch(message_id.strip())
    if match is None or match.group(4).lower() != settings.mail_domain.lower():
        return None
    left = f"{match.group(1)}.{match.group(2)}"
    keys = [settings.secret_key, *settings.old_secret_keys]
    if not any(
        hmac.compare_digest(_message_id_mac(PreparedHmac(_message_id_key(k)), left), match.group(3))
        for k in keys
    ):
        return None
    return int(match.group(1)), int(match.group(2))


_OUR_MESSAGE_ID = re.compile(r"<(\d{1,18})\.(\d{1,18})\.([0-9a-f]{16})@([A-Za-z0-9.-]+)>")


def verp_parts(envelope_sender: str) -> tuple[str, str]:
    """`("bounces+", "@cpi.example")` for `bounces@cpi.example`: a VERP address is the token
    between them. Raises ConfigError naming MAILER_ENVELOPE_SENDER if it is no address."""
    local, at, domain = envelope_sender.rpartition("@")
    if not at or not local or not domain:
        raise ConfigError(
            f"MAILER_ENVELOPE_SENDER={envelope_sender!r} is not an address like bounces@cpi.example"
        )
    return f"{local}+", f"@{domain}"


def _aligned(address: str, mail_domain: str) -> bool:
    """Relaxed alignment, approximated: the address's domain is mail_domain or under it."""
    domain = address.rpartition("@")[2].lower()
    mail_domain = mail_domain.lower()
    return domain == mail_domain or domain.endswith("." + mail_domain)
