#!/usr/bin/env bash
# Lint, type-check and run the whole test suite (what CI runs).
#
# With no arguments the tests run in two passes: every test file in parallel
# (OPENRTC_TEST_JOBS processes, 4 by default; most tests wait on sockets and timers),
# then the tests marked `serial` alone, since they read CPU clocks or real-time latency.
# Both passes always run; the script fails if either did. With arguments, pytest runs
# once with them, in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests $( [ -d bench ] && echo bench )
.venv/bin/mypy
if [ -d bench ]; then MYPYPATH=bench .venv/bin/mypy bench; fi
.venv/bin/lint-imports
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
status=0
.venv/bin/python -m pytest -n "${OPENRTC_TEST_JOBS:-4}" --dist loadfile -m "not serial" || status=$?
.venv/bin/python -m pytest -m serial || status=$?
exit "$status"
