"""Log lines that a file name cannot forge: control characters are shown escaped.

A name is chosen by whoever made the folder. Raw, an ESC sequence in it can retitle or clear the
terminal, a newline can forge a log line in ``cli.log``, and a bidi override can reorder what is
shown. :func:`printable` escapes them as Python does in a string's repr (``\\x1b``, ``\\n``,
``\\u202e``); :class:`EscapeControl` applies it to every record a handler emits.
"""

from __future__ import annotations

import logging
import re

# C0 and C1 controls, DEL, and the bidirectional embeddings, overrides and isolates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match) -> str:
    c = m.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100
                                                                 else f"\\u{ord(c):04x}")


def printable(text: object) -> str:
    """``str(text)`` with its control and bidi characters escaped; the rest (accents, scripts) as it is."""
    return _CONTROL.sub(_escape, str(text))


class EscapeControl(logging.Filter):
    """A handler filter: the record's message with control characters escaped (a traceback keeps its lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _CONTROL.search(message):
            record.msg, record.args = printable(message), None
        return True


def escape_handlers(logger: logging.Logger | None = None) -> None:
    """Add :class:`EscapeControl` to every handler of ``logger`` (the root logger by default), once each."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, EscapeControl) for f in handler.filters):
            handler.addFilter(EscapeControl())
