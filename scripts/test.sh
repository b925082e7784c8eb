#!/usr/bin/env bash
# Set up a local virtual environment with everything the tests need, then run them.
#   bash scripts/test.sh            # all tests
#   bash scripts/test.sh -k gallery # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
exec "$VENV/bin/python" -m pytest "$@"
