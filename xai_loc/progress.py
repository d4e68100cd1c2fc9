"""Progress of long work: a tqdm bar on a terminal, a few plain lines in a log.

tqdm redraws one line with carriage returns, which a log file shows as one endless line or
not at all; off a terminal the same bars here write a full line at most every
:data:`LOG_INTERVAL` seconds, and one at the end. Library functions take ``progress=True``
and call :func:`tqdm` exactly as they would call ``tqdm.auto.tqdm``.
"""
from __future__ import annotations

import sys

#: Seconds between progress lines when stderr is not a terminal.
LOG_INTERVAL = 30.0

__all__ = ["LOG_INTERVAL", "tqdm"]


class _Lines:
    """A file for tqdm that turns each redraw into one complete line (for logs)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def tqdm(*args, **kwargs):
    """``tqdm.auto.tqdm`` on a terminal; off it, a bar that writes a line every :data:`LOG_INTERVAL` s and one
    at the end (also for ``leave=False``, which on a terminal only clears the bar)."""
    from tqdm.auto import tqdm as bar

    stream = kwargs.get("file") or sys.stderr
    if kwargs.get("disable") or getattr(stream, "isatty", lambda: False)():
        return bar(*args, **kwargs)
    kwargs.update(file=_Lines(stream), mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL, ascii=True,
                  dynamic_ncols=False, ncols=80, leave=True)
    return bar(*args, **kwargs)
