"""A sweep talks like one tool: one progress line per stage on the terminal, everything else
(our own per-model lines, converter and quantizer logs, warnings, Ray's worker output) in
OUT/sweep.log.

The redirection is at the file-descriptor level because the loudest writers are C++ (LiteRT's
converter, OpenVINO) and child processes, which never see Python's `sys.stderr`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

LOG_NAME = "sweep.log"


@contextlib.contextmanager
def into_log(log: Path) -> Iterator[TextIO]:
    """Send fds 1 and 2 (this process and its children) to `log`; yield a stream on the
    terminal (the former fd 2) for the progress lines. Restored on any exit."""
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    saved = (os.dup(1), os.dup(2))
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    term = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield term
    finally:
        for s in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                s.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (*saved, fd):
            os.close(f)
        term.close()


class Stage:
    """One line per stage: redrawn in place on a terminal, printed once when done otherwise."""

    def __init__(self, stream: TextIO, index: int, count: int, what: str, total: int) -> None:
        self.stream, self.what, self.total, self.done = stream, what, total, 0
        self.head = f"sweep [{index}/{count}] {what}"
        self.tty = getattr(stream, "isatty", lambda: False)()
        self.t0 = time.perf_counter()
        self.notes: list[str] = []
        self._draw(final=False)

    def advance(self, note: str | None = None) -> None:
        self.done += 1
        if note:
            self.notes.append(note)
        self._draw(final=False)

    def finish(self, summary: str, count: int | None = None) -> None:
        self.total = self.total if count is None else count
        self.done = self.total
        self.notes = [summary]
        self._draw(final=True)

    def _draw(self, final: bool) -> None:
        if not (self.tty or final):
            return
        took = time.perf_counter() - self.t0
        tail = f" {self.notes[-1]}" if self.notes else ""
        line = f"{self.head}: {self.done}/{self.total} ({took:.0f} s){tail}"
        self.stream.write(("\r" + line + "\033[K" if self.tty else line) + ("\n" if final else ""))
        self.stream.flush()
