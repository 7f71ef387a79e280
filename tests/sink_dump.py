"""smtp-sink's dump, read while a run goes on: every message counted, one in 1,000 checked.

`smtp-sink -S MARK -D PATH` appends each mail transaction to PATH whole: it spools the
transaction to a private (unlinked) file and, after the final dot and before it answers 250,
opens PATH and copies the spool into it in one blocking loop. smtp-sink is one process with
one thread, so two transactions never interleave in the dump (`strace` shows the copy as one
run of writes; tests/test_sink_dump.py sends from many sessions at once and checks every
message). `SinkDump` makes PATH a named pipe, so nothing piles up on disk or in memory, and a
thread here reads it in large reads into one reused buffer, counts the messages by their start
marker (`bytearray.count`, no per-message Python) and parses every 1,000th with the stdlib
parser (`check_message`).

    with SinkDump(expect) as dump:                   # expect(address) -> Expected | None
        sink = start_smtp_sink(*dump.sink_args, ...)  # tests/smtp_fixtures.py
        dump.start()
        ...                                           # the run
        result = dump.finish()                        # once the last message was accepted
    result.messages, result.checked, result.problems  # ["<message id>: what is wrong", ...]

Each dumped message is: the marker, smtp-sink's own header lines (X-Client-Addr … X-Rcpt-Args,
a three-line Received:), the message as received with LF line ends, and an empty line
(smtp-sink(1), DUMP FILE FORMAT). Only the stdlib: the bench runs it in its own process.
"""

from __future__ import annotations

import contextlib
import fcntl
import html
import os
import pwd
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Protocol

#: What smtp-sink writes before each message (`-S`, with C escapes): control characters a
#: message of ours never holds; one inside a message would make the counts disagree.
MARK = b"\x01\x02smtp-sink dump\x02\x01\n"
SINK_MARK = r"\001\002smtp-sink dump\002\001\n"
#: Written by `finish` after the run: the reader stops there.
END = MARK + b"end of the run\n"
#: Parse and check one message in this many (the 1st, the 1,001st, …).
EVERY = 1000
#: The pipe's buffer (Linux lets any user ask for up to 1 MiB).
PIPE_SIZE = 1 << 20
#: After the reader has emptied the pipe, it lets the pipe fill this long: reads of ~18
#: messages at 9,000 msg/s instead of one per message (a wake-up costs the reading thread
#: ~80 µs on a loaded 2-core machine). Not longer: with 10 ms, the 1 MiB pipe (~180 messages
#: of 5.7 KB) filled at ~9,000 msg/s whenever the reader's wake-up came late (a core and the
#: GIL to wait for), and smtp-sink, one thread for every connection, sat blocked on it in 8 %
#: of samples (its wchan `anon_pipe_write`), stalling the run it measures (docs/performance.md
#: §4). With 2 ms, 1 % of samples; the reader costs ~0.4 µs more per message.
PAUSE_S = 0.002
#: Bytes per read: the sink's writes wait on the pipe's lock while a read copies, so the pipe
#: is emptied in reads of this size rather than in one.
READ_SIZE = 256 << 10
#: The reader's buffer, reused (a fresh `os.read` buffer each time cost an mmap, a munmap and
#: a page fault per 4 KiB: ~5 µs of the reader's ~12 per message): the message being read,
#: and room for a read behind it; it grows for a message larger than that.
BUFFER_SIZE = 4 * READ_SIZE
_F_SETPIPE_SZ, _F_GETPIPE_SZ = 1031, 1032  # Linux's fcntl commands

_PARSER = BytesParser(policy=policy.default)
_MESSAGE_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")
_HTTPS = re.compile(r"<(https://[^<>\s]+)>")
_MAILTO = re.compile(r"<mailto:[^<>\s]+>")
_REQUIRED = ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version")
_OPT_OUT = ("List-Unsubscribe", "List-Unsubscribe-Post")


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
class DumpResult:
    messages: int = 0  #: messages in the dump
    checked: int = 0  #: of them parsed and checked
    problems: list[str] = field(default_factory=list)  #: "<message id>: what is wrong"
    reader_cpu_s: float = 0.0  #: CPU time of the reading thread (its process counts it too)

    def report(self, sent: int, sink_counted: int) -> str | None:
        """Print what the check found; what failed, if anything. The messages in the dump
        must be as many as the send log's sent and the sink's own counter."""
        if self.messages != sent or self.messages != sink_counted:
            self.problems.append(
                f"smtp-sink's dump holds {self.messages:,} messages, the send log says "
                f"{sent:,} sent and the sink's counter {sink_counted:,}: all three must be equal"
            )
        if not self.problems:
            print(
                f"checked {self.checked:,} of {self.messages:,} messages in the run "
                f"(1 in {EVERY:,}): all passed (the reading thread: "
                f"{self.reader_cpu_s / max(self.messages, 1) * 1e6:.1f} µs CPU per message)"
            )
            return None
        print(f"checked {self.checked:,} of {self.messages:,} messages in the run: FAILED")
        for problem in self.problems[:50]:
            print(f"  {problem}")
        if len(self.problems) > 50:
            print(f"  … and {len(self.problems) - 50} more")
        return f"the check found {len(self.problems)} problem(s) in the messages sent (above)"


def check_message(record: bytes, expect: Callable[[str], Expected | None]) -> list[str]:
    """Problems of one dumped message (what follows the marker), each as "<id>: problem";
    none when it is well-formed and says what `expect(recipient address)` says it must."""
    msg = _PARSER.parsebytes(record)
    assert isinstance(msg, EmailMessage)
    message_id = str(msg.get("Message-ID", "")).strip() or "(no Message-ID)"
    problems = _header_problems(msg)
    if not problems:
        problems = _recipient_problems(msg, expect)
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


def _recipient_problems(msg: EmailMessage, expect: Callable[[str], Expected | None]) -> list[str]:
    """What the message says to its recipient: name, greeting, unsubscribe link."""
    to = msg["To"].addresses[0]
    problems = []
    envelope = _envelope_recipient(msg)
    if envelope is None or envelope.lower() != to.addr_spec.lower():
        problems.append(f"To is {to.addr_spec} but the envelope recipient is {envelope}")
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


def _envelope_recipient(msg: EmailMessage) -> str | None:
    """The RCPT TO address smtp-sink recorded (`X-Rcpt-Args: <address> [parameters]`)."""
    args = msg.get_all("X-Rcpt-Args") or []
    found = re.match(r"\s*<([^<>]*)>", str(args[0])) if len(args) == 1 else None
    return found.group(1) if found else None


class SinkDump:
    """A named pipe smtp-sink dumps into, and the thread that reads it (see the module doc).

    A context manager: entering makes the pipe in a directory of its own (on tmpfs where
    there is one: smtp-sink spools each transaction there), leaving removes both."""

    def __init__(self, expect: Callable[[str], Expected | None], *, every: int = EVERY):
        self._expect = expect
        self._every = every
        self._result = DumpResult()
        #: [0, _filled) is the message being read: from its marker to what has come so far
        self._buffer = bytearray(BUFFER_SIZE)
        self._filled = 0
        self._broken = False  #: after a reader failure: only look for the end
        self._ended = False
        self._fd = -1
        self._directory: Path | None = None
        self._thread = threading.Thread(target=self._read, name="sink-dump", daemon=True)

    @property
    def path(self) -> Path:
        if self._directory is None:
            raise RuntimeError("use SinkDump as a context manager: `with SinkDump(...) as dump`")
        return self._directory / "sink.dump"

    @property
    def sink_args(self) -> list[str]:
        """smtp-sink's options for this dump."""
        return ["-S", SINK_MARK, "-D", str(self.path)]

    def __enter__(self) -> SinkDump:
        shm = Path("/dev/shm")
        on = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
        self._directory = Path(tempfile.mkdtemp(prefix="mailer-sink-dump-", dir=on))
        os.mkfifo(self.path, 0o600)
        if os.geteuid() == 0:  # smtp-sink runs as nobody: the pipe and its spool files
            nobody = pwd.getpwnam("nobody")
            for path in (self._directory, self.path):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        # read and write: opening does not wait for a writer, and the reader sees no end of
        # file between the sink's transactions (it opens and closes the pipe for each)
        self._fd = os.open(self.path, os.O_RDWR)
        with contextlib.suppress(OSError):  # a smaller buffer only makes the sink wait more
            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, PIPE_SIZE)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0 and not self._thread.is_alive():
            os.close(self._fd)
        self._fd = -1
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    def start(self) -> None:
        """Start reading: after smtp-sink started, before the first message."""
        self._thread.start()

    def finish(self, timeout: float = 60) -> DumpResult:
        """Mark the end of the run in the pipe and wait until the reader has read up to it:
        call it once every message of the run was accepted (smtp-sink dumps before its 250)."""
        with open(self.path, "wb", buffering=0) as pipe:
            pipe.write(END)  # under PIPE_BUF: one write, never split
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._result.problems.append(f"the dump reader did not finish within {timeout} s")
        return self._result

    def _read(self) -> None:
        started = time.thread_time()
        # a pipe smaller than 1 MiB could fill during the pause and make the sink wait
        pause = PAUSE_S if fcntl.fcntl(self._fd, _F_GETPIPE_SZ) >= PIPE_SIZE else 0
        while not self._ended:
            if len(self._buffer) - self._filled < READ_SIZE:  # a message larger than the buffer
                self._buffer.extend(bytes(len(self._buffer)))
            view = memoryview(self._buffer)[self._filled : self._filled + READ_SIZE]
            count = os.readv(self._fd, [view])
            view.release()  # or the buffer could not grow
            self._take(self._filled + count)
            if count < READ_SIZE and pause and not self._ended:  # the pipe is empty: let it fill
                time.sleep(pause)
        self._result.reader_cpu_s = time.thread_time() - started

    def _take(self, end: int) -> None:
        """Take in the buffer up to `end`: count, check, keep the unfinished message."""
        if not self._broken:
            try:
                self._feed(end)
                return
            except Exception as exc:  # keep draining, or the sink would block on the pipe
                self._result.problems.append(f"the dump reader failed: {exc!r}")
                self._broken = True
        self._ended = self._buffer.find(END, 0, end) >= 0
        self._keep(max(0, end - len(END)), end)

    def _feed(self, end: int) -> None:
        data = self._buffer
        if not data.startswith(MARK[:end], 0, end):
            raise ValueError(f"the dump does not start with the marker: {bytes(data[:60])!r}")
        last = data.rfind(MARK, 0, end)
        if last <= 0:  # the message from the start of the buffer is still coming
            self._filled = end
            return
        done = self._result.messages
        count = data.count(MARK, 0, last)
        self._result.messages = done + count
        # messages done … done+count-1 (from 0) are complete: check those that are sampled
        first = done + (-done % self._every)
        if first < done + count:
            records = bytes(data[:last]).split(MARK)[1:]
            for number in range(first, done + count, self._every):
                self._check(records[number - done])
        self._keep(last, end)
        if data.startswith(END, 0, self._filled):
            if self._filled != len(END):
                extra = bytes(data[len(END) : self._filled])
                raise ValueError(f"data after the end of the run: {extra!r}")
            self._ended = True

    def _keep(self, start: int, end: int) -> None:
        """Move [start, end) of the buffer to its front: the part still to be read."""
        self._buffer[: end - start] = self._buffer[start:end]
        self._filled = end - start

    def _check(self, record: bytes) -> None:
        self._result.checked += 1
        try:
            self._result.problems += check_message(record, self._expect)
        except Exception as exc:
            start = record[:300].decode(errors="replace")
            self._result.problems.append(f"a message could not be checked ({exc!r}): {start}")
