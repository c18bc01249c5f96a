"""Progress of a study: one bar with an ETA over the whole matrix, one line per finished run.

Lines go through tqdm.write so they never tear the bar; without a bar they are plain prints.
"""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    def __init__(self, total: int, done: int = 0, enabled: bool = True, stream: TextIO | None = None,
                 label: str = "runs"):
        self.stream = stream or sys.stderr
        self.bar = None
        if enabled and total:
            from tqdm import tqdm

            # The ETA counts only runs done in this session (initial runs were done earlier).
            self.bar = tqdm(total=total, initial=done, unit="run", desc=label, file=self.stream, dynamic_ncols=True,
                            smoothing=0.1)

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def status(self, text: str) -> None:
        """What is happening now (setting a mode up, calibrating), shown beside the bar."""
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
