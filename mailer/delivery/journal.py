"""The delivery journal: what a worker thread claimed, began and had accepted, on disk at once.

A worker records results in the send log after each slice (`record_every` messages). A crash
between an SMTP server's acceptance and that write used to leave the whole slice uncertain.
Each worker thread therefore appends to a journal file of its own, unbuffered, so a SIGKILL
loses nothing already written to the kernel (a few microseconds per line):

    c 101:1 102:1 103:1     claimed these send ids (id:attempts), just before the claim commits
    a101                    began sending 101 (its content goes to the server now)
    s101 1732931112345      101 was accepted (epoch milliseconds)
    r102                    102 was refused or deferred (the send log will say which)

The file is emptied after each slice's results commit, so it only ever holds one slice. The
sweep reads the journals of dead processes (host and pid are in the file name) and settles their
claims exactly: accepted → sent; begun but not answered → the lease rule (unknown for marketing
mail, sent again for service and policy mail); claimed but never begun, or refused → queued
again. Claims in the journal of a live process are left to it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

#: File names: <host>.<pid>.<unique>.journal
_SUFFIX = ".journal"


def this_host() -> str:
    return socket.gethostname().replace(".", "_")


class Journal:
    """One worker thread's journal file (not thread-safe: one per thread)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{this_host()}.{os.getpid()}.{threading.get_native_id()}-{uuid.uuid4().hex[:6]}"
        self.path = directory / f"{name}{_SUFFIX}"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def claimed(self, claims: Iterable[tuple[int, int]]) -> None:
        line = " ".join(f"{send_id}:{attempts}" for send_id, attempts in claims)
        os.write(self._fd, f"c {line}\n".encode())

    def attempting(self, send_id: int) -> None:
        os.write(self._fd, b"a%d\n" % send_id)

    def answered(self, send_id: int, is_accepted: bool) -> None:
        if is_accepted:
            os.write(self._fd, b"s%d %d\n" % (send_id, time.time_ns() // 1_000_000))
        else:
            os.write(self._fd, b"r%d\n" % send_id)

    def recorded(self) -> None:
        """Everything so far is in the send log: start the file over."""
        os.ftruncate(self._fd, 0)

    def read(self) -> JournalFile:
        """What this journal holds now (for settling its own claims after an error)."""
        journal = JournalFile(self.path, this_host(), os.getpid())
        _parse(self.path.read_text(errors="replace"), journal)
        return journal

    def close(self) -> None:
        """Close the file, and remove it when everything in it has been recorded (it is empty);
        otherwise the sweep settles what it holds once this process has exited."""
        if self._fd < 0:
            return
        is_empty = os.fstat(self._fd).st_size == 0
        os.close(self._fd)
        self._fd = -1
        if is_empty:
            self.path.unlink(missing_ok=True)


@dataclass
class JournalFile:
    """What one journal file says."""

    path: Path
    host: str
    pid: int
    claims: dict[int, int] = field(default_factory=dict)  #: send id → attempts
    begun: set[int] = field(default_factory=set)
    refused: set[int] = field(default_factory=set)
    accepted: dict[int, int] = field(default_factory=dict)  #: send id → epoch milliseconds

    @property
    def is_owner_alive(self) -> bool:
        """Its process still runs; a journal of another host counts as alive (we cannot tell)."""
        if self.host != this_host():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not _is_zombie(self.pid)


def read_journals(directory: Path) -> list[JournalFile]:
    if not directory.is_dir():
        return []
    found: list[JournalFile] = []
    for path in sorted(directory.glob(f"*{_SUFFIX}")):
        parts = path.name.split(".")
        if len(parts) < 4 or not parts[1].isdigit():
            continue
        journal = JournalFile(path, parts[0], int(parts[1]))
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        _parse(text, journal)
        found.append(journal)
    return found


def _parse(text: str, journal: JournalFile) -> None:
    for line in text.splitlines():
        try:
            if line.startswith("c "):
                for pair in line[2:].split():
                    send_id, _, attempts = pair.partition(":")
                    journal.claims[int(send_id)] = int(attempts)
            elif line.startswith("a"):
                journal.begun.add(int(line[1:]))
            elif line.startswith("r"):
                journal.refused.add(int(line[1:]))
            elif line.startswith("s"):
                send_id, _, millis = line[1:].partition(" ")
                journal.accepted[int(send_id)] = int(millis or 0)
        except ValueError:
            continue  # a line cut short by the crash


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
