"""``python -m ldapdkim`` runs the command line."""

from __future__ import annotations

import sys

from ldapdkim.cli import main

sys.exit(main())
