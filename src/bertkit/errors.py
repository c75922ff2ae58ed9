"""One exception type for every error a user can fix.

The CLI prints these without a traceback, so each message must say what was wrong, where
(file, line, value) and how to fix it.
"""

from __future__ import annotations

import difflib


class BertkitError(Exception):
    """A problem with the user's input, files or configuration; the message says how to fix it."""


def suggest(word: str, choices) -> str:
    """' (did you mean `x`?)' for the closest of `choices`, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""
