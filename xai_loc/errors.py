"""Exceptions raised for user errors.

Every problem a user can fix (a bad T60, a source outside the room, an unreadable audio
folder, ...) raises :class:`InputError` with a one-line message that names the offending
value and what is allowed. The CLI turns it into that line on stderr and exit code 2.
"""


class InputError(ValueError):
    """A user-supplied value is invalid; the message is one line, fit for a terminal."""


class WorkLost(InputError):
    """Work could not be finished for a reason outside the inputs (a worker that keeps dying): one line like
    any :class:`InputError`, but what was written is kept, since the same command resumes from it."""
