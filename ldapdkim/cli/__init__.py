"""The ``ldapdkim`` command."""

from ldapdkim.cli.main import main

__all__ = ["main"]
