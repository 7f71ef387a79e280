"""Pytest fixtures for SMTP: fault servers, a TLS certificate, Postfix smtp-sink, settings.

Loaded for every test by `pytest_plugins = ["tests.smtp_fixtures"]` in tests/conftest.py.

    def test_x(smtp_server, smtp_settings): ...        # a started FaultServer, settings aimed at it
    def test_y(make_smtp_server): make_smtp_server(has_pipelining=True, tls_context=...)
    def test_z(smtp_sink): smtp_sink.url               # /usr/sbin/smtp-sink, skipped if missing
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailer.config import Settings
from mailer.transports.capture import free_port
from tests.required_tools import require
from tests.smtpd import FaultServer

SMTP_SINK = "/usr/sbin/smtp-sink"


@pytest.fixture
def make_smtp_server() -> Iterator[Callable[..., FaultServer]]:
    """Start FaultServers with any options; all are stopped after the test."""
    servers: list[FaultServer] = []

    def make(**kwargs: Any) -> FaultServer:
        server = FaultServer(**kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def smtp_server(make_smtp_server: Callable[..., FaultServer]) -> FaultServer:
    """A started FaultServer on 127.0.0.1: plain SMTP, SMTPUTF8, no PIPELINING."""
    return make_smtp_server()


@pytest.fixture
def smtp_settings(smtp_server: FaultServer, tmp_path: Path) -> Settings:
    """Settings aimed at `smtp_server`, with a short timeout and a small pool."""
    return Settings(
        var_dir=tmp_path / "var",
        smtp_url=smtp_server.url + "?timeout_s=5",
        smtp_pool_size=4,
        smtp_local_hostname="mailer.test",
    )


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate for 127.0.0.1 and localhost, made at test time."""

    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsFiles(cert_path, key_path)


@dataclass(frozen=True)
class SmtpSink:
    """Postfix smtp-sink on 127.0.0.1: accepts everything, advertises PIPELINING, keeps nothing."""

    port: int
    process: subprocess.Popen[bytes]
    counter: Path | None = None  #: where the sink writes its running counter (`-c`), if asked

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def delivered(self) -> int:
        """Messages the sink has taken so far, by its own counter (`counter=` at start)."""
        if self.counter is None:
            raise RuntimeError("start_smtp_sink(counter=PATH) keeps the sink's counter")
        # smtp-sink -c writes "sess=N quit=N mesg=N" and a CR after each change
        found = re.findall(rb"mesg=(\d+)", self.counter.read_bytes()[-200:])
        return int(found[-1]) if found else 0


def start_smtp_sink(
    *extra: str,
    backlog: int = 1000,
    counter: Path | None = None,
    stdout: int = subprocess.DEVNULL,
) -> SmtpSink:
    """Start smtp-sink on a free port and wait until it answers; the caller kills it.

    With `counter`, the sink counts what it takes into that file (`SmtpSink.delivered`).
    `stdout=subprocess.PIPE` with `-c` among `extra`: its running counter, unbuffered."""
    port = free_port()
    # smtp-sink refuses to run as root without a user to switch to.
    as_user = ["-u", "nobody"] if os.geteuid() == 0 else []
    count = ["-c"] if counter is not None else []
    output = counter.open("wb") if counter is not None else None
    try:
        process = subprocess.Popen(
            [SMTP_SINK, *as_user, *count, *extra, f"127.0.0.1:{port}", str(backlog)],
            stdout=output or stdout,
            stderr=subprocess.DEVNULL,
            # with TZ unset, glibc stats /etc/localtime at every localtime() the sink makes
            env={**os.environ, "TZ": "UTC"},
        )
    finally:
        if output is not None:
            output.close()  # the sink has its own copy
    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return SmtpSink(port, process, counter)
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"smtp-sink did not start on port {port}") from None
            time.sleep(0.02)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    require(SMTP_SINK)
    sink = start_smtp_sink()
    yield sink
    sink.process.kill()
    sink.process.wait()
