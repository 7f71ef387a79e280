"""What a run sends to smtp-sink, read off the loopback interface while it goes on: every
message counted, one in 1,000 parsed and checked.

A packet socket bound to `lo` gets a copy of each TCP segment sent to the sink's port that
opens, closes or carries data; a classic BPF filter in the kernel drops every other packet
(acknowledgements, the replies, other ports) before it is copied. A thread here puts each
connection's bytes back in order by sequence number and follows its SMTP commands: RCPT TO
names the envelope recipient, DATA starts a message, the line holding one dot ends it. Every
message is counted; every 1,000th (the 1st, the 1,001st, …) is un-dot-stuffed, parsed with the
stdlib parser and checked (`check_message`).

    with WireCheck(port, expect) as check:   # expect(address) -> Expected | None; port: the sink's
        ...                                  # the run: connections open after the check does
        result = check.finish()              # once the sink has accepted the last message
    result.messages, result.checked, result.problems   # ["<message id>: what is wrong", ...]

The sink does nothing for the check, so the run measures mailer, not the check. Before this,
smtp-sink dumped every message into a pipe the bench read (`-D`): in the sink's one thread
that was a spool file written and read back, the pipe opened, written and closed per message,
~30 µs of the ~200 µs a message costs on two cores (docs/performance.md §4). Here the kernel
runs the filter for each packet on `lo` (tens of nanoseconds) in the sender's context and
queues the segments that pass to this socket; the reading thread's time is counted in the
bench's own CPU.

The client side of the stream says everything the check needs when the server accepts every
command, as smtp-sink does: a message the server refused at DATA would never end, and the
counts would disagree. A packet socket needs root (CAP_NET_RAW).
"""

from __future__ import annotations

import ctypes
import errno
import html
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Protocol

#: Parse and check one message in this many (the 1st, the 1,001st, …).
EVERY = 1000
#: The socket's receive buffer: ~8,000 segments of a 5.7 KB message. Nothing is lost while
#: the reader sleeps between reads (the kernel counts what it drops: `_dropped`).
RECEIVE_BUFFER = 64 << 20
#: After the reader has emptied the socket, it sleeps this long: reads of ~100 segments at
#: 10,000 msg/s instead of a wake-up per segment (~20 µs each on a loaded machine). The sink
#: never waits on the reader: the kernel queues up to RECEIVE_BUFFER for it.
PAUSE_S = 0.01
#: One segment on `lo`, headers included (its MTU is 64 KiB; "BIG TCP", off by default,
#: would make IPv4 segments larger, with a total length of 0 that the filter drops).
SEGMENT_MAX = 1 << 16
#: Segments a connection may hold that came before bytes preceding them (lo can reorder the
#: parts of one write when two CPUs send them); more, and the missing bytes are reported.
EARLY_MAX = 64

# Linux's packet-socket constants (linux/if_ether.h, linux/if_packet.h)
_ETH_P_ALL, _ETH_P_IP = 0x0003, 0x0800
_SOL_PACKET = 263
_PACKET_STATISTICS = 6
_PACKET_IGNORE_OUTGOING = 23  # each packet on lo goes out and comes in: take it coming in
_SO_ATTACH_FILTER = 26
_SO_RCVBUFFORCE = 33
_SYN, _FIN, _RST = 0x02, 0x01, 0x04
_SKF_AD_PROTOCOL = 0xFFFFF000  # SKF_AD_OFF + SKF_AD_PROTOCOL: a load of skb->protocol
_SEQ_MOD = 1 << 32

_TCP_HEAD = struct.Struct("!HHI")  # source port, destination port, sequence number
_PARSER = BytesParser(policy=policy.default)
_MESSAGE_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")
_HTTPS = re.compile(r"<(https://[^<>\s]+)>")
_MAILTO = re.compile(r"<mailto:[^<>\s]+>")
_ADDRESS = re.compile(rb"<([^<>]*)>")
#: MAIL FROM, one RCPT TO and DATA, as a client sends them for each message.
_ENVELOPE = re.compile(rb"MAIL FROM:[^\r\n]*\r\nRCPT TO:<([^<>\r\n]*)>[^\r\n]*\r\nDATA\r\n", re.I)
_REQUIRED = ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version")
_OPT_OUT = ("List-Unsubscribe", "List-Unsubscribe-Post")


NEEDS_ROOT = (
    "the in-run check reads the sink's traffic with a packet socket, which needs root "
    "(CAP_NET_RAW): run as root, or pass --no-check to run without the check"
)


def packet_socket_problem() -> str | None:
    """Why this process cannot open the check's packet socket, or None when it can."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0).close()
    except PermissionError:
        return NEEDS_ROOT
    return None


def segment_filter(port: int) -> list[tuple[int, int, int, int]]:
    """A classic BPF program, as (code, jt, jf, k), that passes whole an IPv4 TCP segment to
    `port` that carries data or has SYN, FIN or RST set, and drops every other packet. It sees
    the packet from its IP header on, as a SOCK_DGRAM packet socket does (linux/filter.h)."""
    ld_b, ld_h, ld_b_x, ld_h_x = 0x30, 0x28, 0x50, 0x48  # BPF_LD|B or H|ABS, and |IND (at X+k)
    ldx_ip_head = 0xB1  # BPF_LDX|B|MSH: X = 4 * (byte k & 0xf)
    jeq, jset, jgt_x = 0x15, 0x45, 0x2D
    and_, rsh, add_x, tax, ret = 0x54, 0x74, 0x0C, 0x07, 0x06
    program: list[tuple[int, str | None, str | None, int]] = [
        (ld_h, None, None, _SKF_AD_PROTOCOL),  # A = the link layer's protocol
        (jeq, None, "drop", _ETH_P_IP),
        (ld_b, None, None, 9),  # A = the IP protocol
        (jeq, None, "drop", socket.IPPROTO_TCP),
        (ld_h, None, None, 6),  # A = the IP flags and fragment offset
        (jset, "drop", None, 0x1FFF),  # a fragment after the first
        (ldx_ip_head, None, None, 0),  # X = the IP header's length
        (ld_h_x, None, None, 2),  # A = the TCP destination port
        (jeq, None, "drop", port),
        (ld_b_x, None, None, 13),  # A = the TCP flags
        (jset, "accept", None, _SYN | _FIN | _RST),
        (ld_b_x, None, None, 12),  # A = the TCP header's length in words, high nibble
        (and_, None, None, 0xF0),
        (rsh, None, None, 2),  # A = the TCP header's length in bytes
        (add_x, None, None, 0),  # A = both headers' length
        (tax, None, None, 0),
        (ld_h, None, None, 2),  # A = the IP total length
        (jgt_x, "accept", "drop", 0),  # longer than the headers: data
    ]
    labels = {"accept": len(program), "drop": len(program) + 1}

    def jump(at: int, label: str | None) -> int:  # jumps count from the next instruction
        return 0 if label is None else labels[label] - at - 1

    return [
        *((code, jump(at, jt), jump(at, jf), k) for at, (code, jt, jf, k) in enumerate(program)),
        (ret, 0, 0, SEGMENT_MAX),  # accept: the whole segment
        (ret, 0, 0, 0),  # drop
    ]


@dataclass(frozen=True)
class Expected:
    """What the message to one recipient must say."""

    display_name: str  #: the To header's name
    greeting: str  #: a phrase both the text and the HTML body must hold, e.g. "Hello Ana,"
    #: List-Unsubscribe (one https and one mailto URI, the https one in both bodies) and
    #: List-Unsubscribe-Post; False for a message that must have neither (a policy notice)
    opt_out: bool = True


class Named(Protocol):
    first_name: str
    last_name: str


def greeted(
    find: Callable[[str], Named | None], *, opt_out: bool
) -> Callable[[str], Expected | None]:
    """`expect` for templates that greet "Hello <first name or 'there'>," (the benchmarks'),
    from `find(address)`: the recipient the run meant, or None."""

    def expect(address: str) -> Expected | None:
        person = find(address)
        if person is None:
            return None
        name = f"{person.first_name} {person.last_name}".strip()
        return Expected(name, f"Hello {person.first_name or 'there'},", opt_out)

    return expect


@dataclass
class CheckResult:
    messages: int = 0  #: messages seen on the wire, whole
    checked: int = 0  #: of them parsed and checked
    segments: int = 0  #: TCP segments read (that opened, closed or carried data)
    problems: list[str] = field(default_factory=list)  #: "<message id>: what is wrong"
    reader_cpu_s: float = 0.0  #: CPU time of the reading thread (its process counts it too)

    def report(self, sent: int, sink_counted: int) -> str | None:
        """Print what the check found; what failed, if anything. The messages seen on the wire
        must be as many as the send log's sent and the sink's own counter."""
        if self.messages != sent or self.messages != sink_counted:
            self.problems.append(
                f"{self.messages:,} messages went to smtp-sink on the wire, the send log says "
                f"{sent:,} sent and the sink's counter {sink_counted:,}: all three must be equal"
            )
        if not self.problems:
            print(
                f"checked {self.checked:,} of {self.messages:,} messages in the run "
                f"(1 in {EVERY:,}): all passed (the reading thread: "
                f"{self.reader_cpu_s / max(self.messages, 1) * 1e6:.1f} µs CPU per message, "
                f"{self.segments / max(self.messages, 1):.2f} segments)"
            )
            return None
        print(f"checked {self.checked:,} of {self.messages:,} messages in the run: FAILED")
        for problem in self.problems[:50]:
            print(f"  {problem}")
        if len(self.problems) > 50:
            print(f"  … and {len(self.problems) - 50} more")
        return f"the check found {len(self.problems)} problem(s) in the messages sent (above)"


def check_message(
    message: bytes, recipients: list[str], expect: Callable[[str], Expected | None]
) -> list[str]:
    """Problems of one message as sent (CRLF lines, dot-stuffing undone) to the envelope
    `recipients`, each as "<id>: problem"; none when it is well-formed and says what
    `expect(recipient address)` says it must."""
    msg = _PARSER.parsebytes(message)
    assert isinstance(msg, EmailMessage)
    message_id = str(msg.get("Message-ID", "")).strip() or "(no Message-ID)"
    problems = _header_problems(msg)
    if not problems:
        problems = _recipient_problems(msg, recipients, expect)
    return [f"{message_id}: {p}" for p in problems]


def _header_problems(msg: EmailMessage) -> list[str]:
    """The fields every message has, once each and well-formed."""
    problems = [
        f"{name} appears {n} times, not once"
        for name in _REQUIRED
        if (n := len(msg.get_all(name) or [])) != 1
    ]
    if problems:
        return problems
    for name in _REQUIRED:
        defects = getattr(msg[name], "defects", ())
        if defects:
            problems.append(f"{name} is malformed: {'; '.join(map(str, defects))}")
    if len(msg["From"].addresses) != 1 or "@" not in msg["From"].addresses[0].addr_spec:
        problems.append(f"From is not one address: {msg['From']!r}")
    if len(msg["To"].addresses) != 1:
        problems.append(f"To is not one address: {msg['To']!r}")
    if not str(msg["Subject"]).strip():
        problems.append("the Subject is empty")
    date = msg["Date"].datetime
    if date is None or date.tzinfo is None:
        problems.append(f"the Date has no time zone or does not parse: {msg['Date']!r}")
    if not _MESSAGE_ID.fullmatch(str(msg["Message-ID"]).strip()):
        problems.append(f"the Message-ID is not <local@domain>: {msg['Message-ID']!r}")
    problems += [f"message defect: {d}" for d in msg.defects]
    if msg.get_content_type() != "multipart/alternative":
        return [*problems, f"the message is {msg.get_content_type()}, not multipart/alternative"]
    kinds = [part.get_content_type() for part in msg.iter_parts()]
    if kinds != ["text/plain", "text/html"]:
        return [*problems, f"the parts are {kinds}, not text/plain then text/html"]
    for part in msg.iter_parts():
        problems += [f"{part.get_content_type()} part defect: {d}" for d in part.defects]
    return problems


def _recipient_problems(
    msg: EmailMessage, recipients: list[str], expect: Callable[[str], Expected | None]
) -> list[str]:
    """What the message says to its recipient: name, greeting, unsubscribe link."""
    to = msg["To"].addresses[0]
    problems = []
    if [r.lower() for r in recipients] != [to.addr_spec.lower()]:
        problems.append(f"To is {to.addr_spec} but the envelope recipients are {recipients}")
    expected = expect(to.addr_spec)
    if expected is None:
        return [*problems, f"{to.addr_spec} is not one of the run's contacts"]
    if to.display_name != expected.display_name:
        problems.append(f"To's name is {to.display_name!r}, not {expected.display_name!r}")
    plain, rich = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and rich is not None  # _header_problems checked the parts
    text, page = plain.get_content(), html.unescape(rich.get_content())
    for label, body in (("text", text), ("HTML", page)):
        if expected.greeting not in body:
            problems.append(f"the {label} body does not say {expected.greeting!r}")
    return problems + _unsubscribe_problems(msg, expected.opt_out, text, page)


def _unsubscribe_problems(msg: EmailMessage, opt_out: bool, text: str, page: str) -> list[str]:
    counts = {name: len(msg.get_all(name) or []) for name in _OPT_OUT}
    if not opt_out:
        return [
            f"{name} is there: this message must not have it" for name, n in counts.items() if n
        ]
    problems = [f"{name} appears {n} times, not once" for name, n in counts.items() if n != 1]
    if problems:
        return problems
    if str(msg["List-Unsubscribe-Post"]).strip() != "List-Unsubscribe=One-Click":
        problems.append(f"List-Unsubscribe-Post is {msg['List-Unsubscribe-Post']!r}")
    unsubscribe = str(msg["List-Unsubscribe"])
    links = _HTTPS.findall(unsubscribe)
    if len(links) != 1 or len(_MAILTO.findall(unsubscribe)) != 1:
        return [*problems, f"List-Unsubscribe is not one https and one mailto URI: {unsubscribe!r}"]
    if not re.search(re.escape(links[0]) + r"(\s|$)", text):
        problems.append(f"the text body does not hold List-Unsubscribe's link {links[0]}")
    if f'href="{links[0]}"' not in page:
        problems.append(f"the HTML body does not link to List-Unsubscribe's {links[0]}")
    return problems


def undo_dot_stuffing(data: bytes) -> bytes:
    """The message as the server takes it: the first dot of each line that starts with one
    deleted (RFC 5321 §4.5.2). `data` runs from after DATA to the CRLF before the final dot."""
    data = data.replace(b"\r\n.", b"\r\n")
    return data[1:] if data.startswith(b".") else data


class _Connection:
    """One client connection's bytes, in order, and where its SMTP conversation is."""

    __slots__ = (
        "data_from",
        "early",
        "end_seq",
        "in_data",
        "keep",
        "next_seq",
        "pending",
        "recipients",
        "search_from",
    )

    def __init__(self, first_seq: int):
        self.next_seq = first_seq  #: the sequence number of the next byte expected
        #: Segments that came before bytes that precede them, by sequence number.
        self.early: dict[int, bytes] = {}
        self.end_seq: int | None = None  #: where its FIN or RST said it ends
        #: Bytes not taken yet. Between messages: a partial command line. Inside one: the CRLF
        #: that ended DATA, then the message so far when it is to be checked (`keep`), else
        #: only its last 4 bytes, where a final dot split across segments may begin.
        self.pending = bytearray()
        self.in_data = False
        self.keep = False  #: the message under way is one to check
        self.data_from = 0  #: where it starts in `pending` (when kept)
        self.search_from = 0  #: where its end may begin in `pending`
        self.recipients: list[str] = []


class WireCheck:
    """The packet socket, the filter and the reading thread (see the module doc).

    A context manager: entering opens the socket and starts reading, leaving closes it."""

    def __init__(self, port: int, expect: Callable[[str], Expected | None], *, every: int = EVERY):
        self._port = port
        self._expect = expect
        self._every = every
        self._result = CheckResult()
        self._connections: dict[int, _Connection] = {}  #: by the client's port
        #: Clients' ports to ignore until their next SYN: ended, or bytes went missing.
        self._quiet: set[int] = set()
        self._started = 0  #: messages begun (DATA): every `every`th, from the first, is kept
        self._stopping = False
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._read, name="wire-check", daemon=True)

    def __enter__(self) -> WireCheck:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> WireCheck:
        """Open the socket and start reading: before the run's first connection."""
        try:
            # protocol 0: no packet reaches the socket before its filter is on and it is bound
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
        except PermissionError:
            raise PermissionError(errno.EPERM, NEEDS_ROOT) from None
        try:
            program = segment_filter(self._port)
            code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))
            fprog = struct.pack("HP", len(program), ctypes.addressof(code))  # sock_fprog
            sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
            sock.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RECEIVE_BUFFER)
            except PermissionError:  # without CAP_NET_ADMIN: as much as net.core.rmem_max allows
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            # every protocol: such a socket gets each packet before IP and TCP take it in, so a
            # segment is queued here before the sink can read it (the filter keeps IPv4 TCP)
            sock.bind(("lo", _ETH_P_ALL))
            sock.setblocking(False)
            self._dropped(sock)  # zero the kernel's counters: they count from their last read
        except BaseException:
            sock.close()
            raise
        self._socket = sock
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop reading (when `finish` did not) and close the socket."""
        if self._thread.is_alive():
            self._stopping = True
            self._thread.join(10)
        if self._socket is not None and not self._thread.is_alive():
            self._socket.close()
            self._socket = None

    def finish(self, timeout: float = 60) -> CheckResult:
        """Read what is left and stop: call it once the sink accepted every message of the run
        (the kernel queues each segment on this socket before the sink can read it)."""
        self._stopping = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._result.problems.append(f"the wire reader did not finish within {timeout} s")
            return self._result
        self._gaps()
        assert self._socket is not None
        dropped = self._dropped(self._socket)
        if dropped:
            self._result.problems.append(
                f"the packet socket dropped {dropped:,} segments (its reader fell behind): "
                f"the counts and checks above miss them"
            )
        return self._result

    @staticmethod
    def _dropped(sock: socket.socket) -> int:
        """Segments the kernel dropped since this was last asked (struct tpacket_stats)."""
        stats = sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8)
        return struct.unpack("II", stats)[1]

    def _read(self) -> None:
        started = time.thread_time()
        assert self._socket is not None
        recv_into = self._socket.recv_into
        buffer = bytearray(SEGMENT_MAX)
        while True:
            stopping = self._stopping  # read before the last drain: it sees every segment
            while True:
                try:
                    size = recv_into(buffer)
                except BlockingIOError:
                    break
                except OSError as exc:
                    self._result.problems.append(f"the wire reader could not read: {exc!r}")
                    stopping = True
                    break
                self._result.segments += 1
                try:
                    self._segment(buffer, size)
                except Exception as exc:  # keep reading: a count that disagrees will show
                    self._result.problems.append(f"the wire reader failed: {exc!r}")
            if stopping:
                break
            time.sleep(PAUSE_S)
        self._result.reader_cpu_s = time.thread_time() - started

    def _segment(self, packet: bytearray, size: int) -> None:
        """Take one segment: a connection opened, bytes of one, or its end."""
        ip_head = (packet[0] & 0x0F) * 4
        length = min(size, (packet[2] << 8) | packet[3])
        client, _, seq = _TCP_HEAD.unpack_from(packet, ip_head)
        start = ip_head + (packet[ip_head + 12] >> 4) * 4
        flags = packet[ip_head + 13]
        if flags & _SYN:
            self._connections[client] = _Connection((seq + 1) % _SEQ_MOD)
            self._quiet.discard(client)
            return
        connection = self._connections.get(client)
        if connection is None:
            if length > start and client not in self._quiet:
                self._quiet.add(client)
                self._result.problems.append(
                    f"bytes from port {client}, a connection opened before the check began"
                )
            return
        if flags & (_FIN | _RST):  # it ends where this segment's bytes end
            connection.end_seq = (seq + length - start) % _SEQ_MOD
        ahead = (seq - connection.next_seq) % _SEQ_MOD
        if 0 < ahead < _SEQ_MOD // 2:  # overtook bytes still to come (lo may reorder)
            if length > start:
                if len(connection.early) >= EARLY_MAX:
                    self._lose(client, connection)
                    return
                connection.early[seq] = bytes(packet[start:length])
            return
        self._bytes(connection, packet, start + (-ahead % _SEQ_MOD), length)
        while (due := self._due(connection)) is not None:  # what came early and now follows on
            early = bytearray(connection.early.pop(due))
            self._bytes(connection, early, (connection.next_seq - due) % _SEQ_MOD, len(early))
        if connection.end_seq == connection.next_seq and not connection.early:
            del self._connections[client]
            self._quiet.add(client)  # a retransmission after the end is no news

    @staticmethod
    def _due(connection: _Connection) -> int | None:
        """An early segment's sequence number that the bytes taken have now reached."""
        return next(
            (
                seq
                for seq in connection.early
                if (connection.next_seq - seq) % _SEQ_MOD < _SEQ_MOD // 2
            ),
            None,
        )

    def _bytes(self, connection: _Connection, packet: bytearray, start: int, end: int) -> None:
        """The connection's next bytes are `packet[start:end]` (a start past the end: none)."""
        if end <= start:
            return
        connection.next_seq = (connection.next_seq + end - start) % _SEQ_MOD
        if not self._took_whole(connection, packet, start, end):
            connection.pending += packet[start:end]
            self._take(connection)

    def _gaps(self) -> None:
        """At the end: connections whose early segments wait for bytes that never came."""
        for client, connection in list(self._connections.items()):
            if connection.early:
                self._lose(client, connection)

    def _lose(self, client: int, connection: _Connection) -> None:
        """Bytes of `client`'s connection never came: say so, and follow it no further."""
        early = min(connection.early, key=lambda seq: (seq - connection.next_seq) % _SEQ_MOD)
        missing = (early - connection.next_seq) % _SEQ_MOD
        self._result.problems.append(
            f"{missing:,} bytes from port {client} never reached the check: its messages "
            f"from there on are not counted"
        )
        del self._connections[client]
        self._quiet.add(client)

    def _took_whole(self, connection: _Connection, packet: bytearray, start: int, end: int) -> bool:
        """The common case, taken where it lies, without copying: a message not to be checked
        whose bytes all came in this segment, followed by the next one's envelope (as mailer's
        client sends them). False, having taken nothing, for anything else."""
        if not connection.in_data or connection.keep or len(connection.pending) != 2:
            return False
        final = packet.rfind(b"\r\n.\r\n", start, end)  # see `_take` on why the last
        if final < 0 or packet.startswith(b".\r\n", start, end):
            return False
        envelope = _ENVELOPE.fullmatch(packet, final + 5, end)
        if envelope is None:
            return False
        self._message(connection, packet, final + 2)  # not kept: counted only
        connection.recipients = [envelope.group(1).decode(errors="replace")]
        self._begin(connection, 2)  # `pending` is still the CRLF before a message
        return True

    def _take(self, connection: _Connection) -> None:
        """Follow the conversation through `pending`: commands and messages."""
        data = connection.pending
        at = 0  # what is taken so far
        while True:
            if connection.in_data:
                # the last end in what came: a client sends a message only after the server's
                # 354 to its DATA (RFC 5321 §4.1.1.4, RFC 2920 §3.1), so what came holds at most
                # one end, near its tail; a client that sent two would be counted short
                end = data.rfind(b"\r\n.\r\n", connection.search_from)
                if end < 0:
                    break
                self._message(connection, data, end + 2)
                at = end + 5
            # the envelope a pipelining client sends after each message, in one match
            envelope = _ENVELOPE.match(data, at)
            if envelope is not None:
                connection.recipients = [envelope.group(1).decode(errors="replace")]
                at = envelope.end()
            else:
                line_end = data.find(b"\r\n", at)
                if line_end < 0:
                    break
                verb = bytes(data[at : at + 4]).upper()
                if verb == b"RCPT":
                    found = _ADDRESS.search(data, at, line_end)
                    address = found.group(1).decode(errors="replace") if found else ""
                    connection.recipients.append(address)
                elif verb in (b"MAIL", b"RSET"):
                    connection.recipients = []
                at = line_end + 2
                if verb != b"DATA":
                    continue
            self._begin(connection, at)
        if not connection.in_data:
            del data[:at]
            return
        # no end in what came: it may begin in the last 4 bytes, never before the CRLF
        searched = max(connection.search_from, len(data) - 4)
        cut = connection.data_from - 2 if connection.keep else searched
        del data[:cut]
        connection.data_from -= cut
        connection.search_from = searched - cut

    def _begin(self, connection: _Connection, at: int) -> None:
        """DATA: a message starts at `at` in `pending`, after the CRLF that ended DATA."""
        connection.in_data = True
        connection.keep = self._started % self._every == 0
        self._started += 1
        connection.data_from, connection.search_from = at, at - 2

    def _message(self, connection: _Connection, data: bytearray, end: int) -> None:
        """A whole message came, up to `end` in `data`: count it, check it if it is kept."""
        connection.in_data = False
        self._result.messages += 1
        if not connection.keep:
            return
        self._result.checked += 1
        message = undo_dot_stuffing(bytes(data[connection.data_from : end]))
        try:
            self._result.problems += check_message(message, connection.recipients, self._expect)
        except Exception as exc:
            head = message[:300].decode(errors="replace")
            self._result.problems.append(f"a message could not be checked ({exc!r}): {head}")
