"""The delivery journal: what a worker thread claimed, began and had accepted, on disk at once.

A worker records results in the send log after each slice (`record_every` messages). A crash
between an SMTP server's acceptance and that write used to leave the whole slice uncertain.
Each worker thread therefore keeps a journal file of its own and stores each line into it the
moment it happens:

    c 101:1 102:1 103:1     claimed these send ids (id:attempts), just before the claim commits
    a101                    began sending 101 (its content goes to the server now)
    s101 1732931112345      101 was accepted (epoch milliseconds)
    r102                    102 was refused or deferred (the send log will say which)

The lines go into a shared memory mapping of the file (MAP_SHARED), not through write(): a store
into a shared file mapping lands in the kernel's page cache, the same pages write() would fill,
so it outlives a SIGKILL of the process exactly as an unbuffered write does, with no system call
per line (before: two per message and two per slice). Neither survives a power loss (no fsync,
as before).

A kill can cut the last store short, and a copy need not fill its bytes in order; so everything
after the last line is kept zeroed (the file grows, with zeros, when a slice needs more room)
and a reader stops at the first NUL and keeps only whole lines before it: a line the kill cut is
dropped, which is safe because each line is written before the step it speaks for (the claim
commits, the content goes out) or, for an acceptance, counts as begun and unanswered.

After each slice's results commit the used part is zeroed, its first byte first (a reader then
sees an empty journal even if the kill comes mid-way), so a journal only ever holds one slice. The
sweep reads the journals of dead processes (host and pid are in the file name) and settles their
claims exactly: accepted → sent; begun but not answered → the lease rule (unknown for marketing
mail, sent again for service and policy mail); claimed but never begun, or refused → queued
again. Claims in the journal of a live process are left to it.
"""

from __future__ import annotations

import mmap
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
#: A new journal's size (bytes): a slice of 50 sends takes about 2.5 KiB; it doubles when a
#: slice needs more.
_INITIAL_BYTES = 64 * 1024


def this_host() -> str:
    return socket.gethostname().replace(".", "_")


class Journal:
    """One worker thread's journal file, mapped into memory (not thread-safe: one per thread)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{this_host()}.{os.getpid()}.{threading.get_native_id()}-{uuid.uuid4().hex[:6]}"
        self.path = directory / f"{name}{_SUFFIX}"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        _allocate(self._fd, _INITIAL_BYTES)
        # MAP_SHARED, read and write; the map's position is where the next line goes, and
        # every byte from there on is zero
        self._map = mmap.mmap(self._fd, _INITIAL_BYTES)

    def claimed(self, claims: Iterable[tuple[int, int]]) -> None:
        line = " ".join(f"{send_id}:{attempts}" for send_id, attempts in claims)
        self._store(f"c {line}\n".encode())

    def attempting(self, send_id: int) -> None:
        self._store(b"a%d\n" % send_id)

    def answered(self, send_id: int, is_accepted: bool) -> None:
        if is_accepted:
            self._store(b"s%d %d\n" % (send_id, time.time_ns() // 1_000_000))
        else:
            self._store(b"r%d\n" % send_id)

    def _store(self, line: bytes) -> None:
        try:
            self._map.write(line)  # checks the room before it copies a byte
        except ValueError:
            self._grow(len(line))
            self._map.write(line)

    def _grow(self, needed: int) -> None:
        used = self._map.tell()
        size = len(self._map)
        while size < used + needed:
            size *= 2
        _allocate(self._fd, size)
        self._map.close()
        self._map = mmap.mmap(self._fd, size)
        self._map.seek(used)

    def recorded(self) -> None:
        """Everything so far is in the send log: zero it and start over."""
        used = self._map.tell()
        if used == 0:
            return
        self._map[0] = 0  # one byte: from here on a reader sees an empty journal
        self._map[1:used] = bytes(used - 1)
        self._map.seek(0)

    def read(self) -> JournalFile:
        """What this journal holds now (for settling its own claims after an error)."""
        journal = JournalFile(self.path, this_host(), os.getpid())
        _parse(self._map[: self._map.tell()], journal)
        return journal

    def close(self) -> None:
        """Close the file, and remove it when everything in it has been recorded (it is empty);
        otherwise the sweep settles what it holds once this process has exited."""
        if self._fd < 0:
            return
        is_empty = self._map.tell() == 0
        self._map.close()
        os.close(self._fd)
        self._fd = -1
        if is_empty:
            self.path.unlink(missing_ok=True)


def _allocate(fd: int, size: int) -> None:
    """Make the file `size` bytes, zeros past what it held, on disk blocks reserved now: a full
    disk is an OSError here, as it was from write(), never a SIGBUS on a store into the map."""
    os.posix_fallocate(fd, 0, size)


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
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        _parse(data, journal)
        found.append(journal)
    return found


def _parse(data: bytes, journal: JournalFile) -> None:
    """The whole lines before the first NUL: past it the file is zeros, and a line without its
    newline before it was cut short by a kill."""
    data = data.split(b"\0", 1)[0]
    whole = data[: data.rfind(b"\n") + 1].decode(errors="replace")
    for line in whole.splitlines():
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
            continue  # not a line this module writes


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
