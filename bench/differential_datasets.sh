#!/usr/bin/env bash
# Host lists, OpenDKIM 2.11 against ldapdkim, at length: N generated InternalHosts
# files (default 500), each with its generated clients, through both milters
# (tests/integration/test_opendkim_datasets.py; the suite runs 10, the same 10
# every time).  Needs root and tests/setup.sh.
#
#   bash bench/differential_datasets.sh [N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LDAPDKIM_FUZZ_EXAMPLES=${1:-500} .venv/bin/python -m pytest -q -p no:cacheprovider \
    tests/integration/test_opendkim_datasets.py
