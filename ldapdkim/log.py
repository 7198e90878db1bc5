"""Logging set-up for the command line and the daemon, with secret redaction.

Library modules only call ``logging.getLogger(__name__)``; handlers are
configured here.  The redaction filter is the last line of defence: the code
never formats a key or password into a message, and this filter removes PEM
blocks and known secrets should one slip through.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

_PEM = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S
)


class RedactingFilter(logging.Filter):
    """Replaces PEM private keys and the given secret strings in log records."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        text = _PEM.sub("[private key removed]", text)
        for secret in self.secrets:
            text = text.replace(secret, "[secret removed]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def setup_cli_logging(verbose: bool, secrets: Iterable[str] = ()) -> None:
    """Warnings (or, with ``-v``, everything) to stderr as ``ldapdkim: LEVEL: text``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ldapdkim: %(levelname)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger("ldapdkim")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.propagate = False
