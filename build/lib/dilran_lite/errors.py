"""The one exception class for a user's mistake (a bad file, option or checkpoint).

The command line prints a ``UserError`` as one line, ``dilran-lite: error: <message>``, and exits
with status 2; ``--debug`` shows the traceback instead. A message says what is wrong, with which
file, and what to do.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A problem with what the user gave: reported in one line, exit status 2, no traceback."""
