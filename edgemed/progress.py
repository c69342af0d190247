"""Progress lines on stderr: redrawn in place on a terminal, one line per update otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """A counter with a bar; `advance()` per item, `note()` for the trailing text, `close()` at the end."""

    def __init__(self, total: int, label: str, stream=None, min_interval: float = 0.2) -> None:
        self.total, self.label, self.done = max(1, total), label, 0
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.text, self.start, self.last = "", time.perf_counter(), 0.0
        self.min_interval = min_interval

    def advance(self, n: int = 1, text: str | None = None) -> None:
        self.done = min(self.total, self.done + n)
        if text is not None:
            self.text = text
        now = time.perf_counter()
        final = self.done >= self.total
        if self.tty and (final or now - self.last >= self.min_interval):
            self.last = now
            self._draw("\r", "")

    def note(self, text: str) -> None:
        """Set the trailing text and print a line (always, also off a terminal)."""
        self.text = text
        self._draw("\r" if self.tty else "", "\n")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, prefix: str, end: str) -> None:
        width = 24
        filled = int(width * self.done / self.total)
        elapsed = time.perf_counter() - self.start
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"{prefix}{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.1f}s {self.text}\033[K"[
                :200
            ]
            + end
            if self.tty
            else f"{self.label} {self.done}/{self.total} {elapsed:.1f}s {self.text}{end}"
        )
        self.stream.flush()
