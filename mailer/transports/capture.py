"""The embedded default: an SMTP server in this process that files every message in a Maildir.

    server = CaptureServer(settings)
    url = server.start()          # "smtp://127.0.0.1:PORT", also written for capture:// to find
    ...                           # make_transport(settings) with smtp_url=capture:// sends here
    server.stop()

It listens on 127.0.0.1 only, offers PIPELINING and SMTPUTF8 (no TLS, no login), and writes
one Maildir file per recipient under `settings.var_dir / "maildir"`: `Return-Path` and
`Delivered-To` lines on top of the exact bytes received. capture:// finds the server through a
file it leaves in var_dir, so worker processes sharing the var_dir find it too.
"""

from __future__ import annotations

import mailbox
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailer.config import Settings
from mailer.errors import ConfigError

if TYPE_CHECKING:
    from aiosmtpd.controller import Controller

#: The file, under var_dir, where a running capture server leaves its URL for capture://.
URL_FILE = "capture-smtp.url"


def maildir_path(settings: Settings) -> Path:
    """Where captured mail goes."""
    return settings.var_dir / "maildir"


def capture_url(settings: Settings) -> str:
    """The smtp:// URL of the capture server started with these settings, for capture://."""
    path = settings.var_dir / URL_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"MAILER_SMTP_URL is capture:// but no capture server is running ({path} is "
            "missing); start one with mailer.transports.CaptureServer(settings).start() "
            "(`mailer demo` does), or set MAILER_SMTP_URL to smtp://host:port"
        ) from None


class _MaildirHandler:
    def __init__(self, directory: Path) -> None:
        self._maildir = mailbox.Maildir(directory, create=True)
        self._lock = threading.Lock()
        self.count = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        # aiosmtpd reads commands line by line, so pipelined ones are fine; offering it puts
        # the demo on the same client path as a production relay.
        session.host_name = hostname
        responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or b""
        sender = envelope.mail_from or ""
        for rcpt in envelope.rcpt_tos:
            head = f"Return-Path: <{sender}>\r\nDelivered-To: {rcpt}\r\n".encode()
            with self._lock:
                self._maildir.add(head + data)
                self.count += 1
        return "250 2.0.0 OK: captured"


class CaptureServer:
    """An aiosmtpd server on a free 127.0.0.1 port writing a Maildir; start() and stop()."""

    def __init__(self, settings: Settings, *, port: int = 0) -> None:
        self.settings = settings
        self.maildir = maildir_path(settings)
        self._port = port
        self._handler: _MaildirHandler | None = None
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        if self._controller is None:
            raise ConfigError("the capture server is not running; call start() first")
        return f"smtp://127.0.0.1:{self._controller.port}"

    @property
    def captured_count(self) -> int:
        """Messages filed since start() (one per recipient)."""
        return self._handler.count if self._handler else 0

    def start(self) -> str:
        """Listen, and leave the URL in var_dir for capture:// to find. Returns the URL."""
        if self._controller is not None:
            return self.url
        # imported here: every command imports this module, few run the capture server
        from aiosmtpd.controller import Controller

        self.maildir.parent.mkdir(parents=True, exist_ok=True)
        self._handler = _MaildirHandler(self.maildir)
        self._controller = Controller(
            self._handler,
            hostname="127.0.0.1",
            port=self._port or free_port(),
            server_hostname="capture.mailer.localdomain",
            enable_SMTPUTF8=True,
            data_size_limit=50 * 1024 * 1024,
        )
        self._controller.start()
        (self.settings.var_dir / URL_FILE).write_text(self.url + "\n")
        return self.url

    def stop(self) -> None:
        """Stop listening and forget the URL file."""
        if self._controller is None:
            return
        url_file = self.settings.var_dir / URL_FILE
        if url_file.is_file() and url_file.read_text().strip() == self.url:
            url_file.unlink()
        self._controller.stop()
        self._controller = None

    def __enter__(self) -> CaptureServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
