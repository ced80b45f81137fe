#!/usr/bin/env bash
# The project's test command: ./tests/run.sh [pytest options]; ./tests/run.sh -m "not slow" for the fast loop.
# It ends with the 15 slowest tests, so that CI's log shows where the time goes.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m pytest -q -p no:cacheprovider --durations=15 tests "$@"
