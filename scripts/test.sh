#!/usr/bin/env bash
# Lint, type-check and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests $( [ -d bench ] && echo bench )
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/python -m pytest "$@"
