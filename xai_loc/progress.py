"""Progress of long work: a tqdm bar on a terminal or in Jupyter, a few plain lines in a log.

tqdm redraws one line with carriage returns, which a log file shows as one endless line or
not at all; off a terminal the same bars here write a full line at most every
:data:`LOG_INTERVAL` seconds, and one at the end. A passing bar (``leave=False``) inside another
open bar (e.g. the batches of one epoch) writes nothing unless it runs longer than
:data:`LOG_INTERVAL`, so a training log gets no lines per epoch beside its outer bar's. Library functions take
``progress=True`` and call :func:`tqdm` exactly as they would call ``tqdm.auto.tqdm``.
"""
from __future__ import annotations

import re
import sys

#: Seconds between progress lines when stderr is not a terminal.
LOG_INTERVAL = 30.0
#: Terminal control sequences (nested bars move the cursor up), which a log shows as stray characters.
_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

__all__ = ["LOG_INTERVAL", "tqdm"]


class _Lines:
    """A file for tqdm that turns each redraw into one complete line (for logs)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = _CONTROL.sub("", text).replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython's ``ZMQInteractiveShell``), whose output is shown live
    although its streams are no terminal."""
    ipython = sys.modules.get("IPython")  # imported by the kernel; never imported here
    shell = getattr(ipython, "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def tqdm(*args, **kwargs):
    """``tqdm.auto.tqdm`` on a terminal or in Jupyter; elsewhere, a bar that writes a line every
    :data:`LOG_INTERVAL` s and one at the end (also for ``leave=False``, which on a terminal only clears the bar);
    a ``leave=False`` bar inside another open bar only when it runs longer than :data:`LOG_INTERVAL`."""
    from tqdm.auto import tqdm as bar

    stream = kwargs.get("file") or sys.stderr
    if kwargs.get("disable") or getattr(stream, "isatty", lambda: False)() or _in_notebook():
        return bar(*args, **kwargs)
    nested = kwargs.get("leave") is False and len(bar._instances) > 0  # open bars (disabled ones are not listed)
    kwargs.update(file=_Lines(stream), mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL, ascii=True,
                  dynamic_ncols=False, ncols=80, leave=True, position=0, delay=LOG_INTERVAL if nested else 0.0)
    return bar(*args, **kwargs)
