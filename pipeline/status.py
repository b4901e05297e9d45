"""A status line for a loop over a known number of items: items done, time per item, elapsed time
and ETA. On a terminal the line rewrites itself (``\\r``) after every item; anywhere else (a log
file, the output `dvc repro` or Prefect captures, CI) each update is a plain line of its own, at
most one every ``every`` seconds, plus the first and the last item."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def duration(seconds: float) -> str:
    """``h:mm:ss``; ``?`` for an unknown (infinite) duration."""
    if seconds == float("inf"):
        return "?"
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (closed or odd streams are not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class StatusLine:
    """Progress of ``total`` items labelled ``label`` (``evaluate principled``), counted in
    ``unit`` (``samples``), written to ``stream`` (default: standard error at each write)."""

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "items",
        stream: TextIO | None = None,
        every: float = 5.0,  # seconds between plain lines (not on a terminal)
        clock: Callable[[], float] = time.monotonic,
    ):
        self.label, self.total, self.unit = label, total, unit
        self.stream, self.every, self.clock = stream, every, clock
        self.start = clock()
        self.last_line = -float("inf")  # when the last plain line was written
        self.width = 0  # length of the line on the terminal, to blank what a shorter one leaves

    def text(self, done: int, note: str = "") -> str:
        elapsed = self.clock() - self.start
        per_item = elapsed / done if done else float("inf")
        eta = per_item * (self.total - done) if done else float("inf")
        pace = f"{per_item:.1f} s/{self.unit.rstrip('s')}" if done else "–"
        line = (
            f"{self.label}: {done}/{self.total} {self.unit}  {pace}  "
            f"elapsed {duration(elapsed)}  ETA {duration(eta)}"
        )
        return f"{line}  {note}" if note else line

    def update(self, done: int, note: str = "") -> None:
        """Report ``done`` items finished (``note``: e.g. the last item's name)."""
        stream = self.stream or sys.stderr
        finished = done >= self.total
        if is_terminal(stream):
            line = self.text(done, note)
            stream.write("\r" + line.ljust(self.width) + ("\n" if finished else ""))
            self.width = 0 if finished else len(line)
        else:
            now = self.clock()
            if not (done <= 1 or finished or now - self.last_line >= self.every):
                return
            stream.write(self.text(done, note) + "\n")
            self.last_line = now
        stream.flush()
