#!/usr/bin/env bash
# Rehearse a deploy with the defaults, write its HTML report and screenshot it into
# docs/rehearsal.png (the picture in README.md). Needs Chromium: apt-get install chromium
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
.venv/bin/openrtc rehearse examples/agents --html "$out/report.html" --json > "$out/report.json"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run \
  --screenshot="$PWD/docs/rehearsal.png" --window-size=1200,900 "file://$out/report.html"
echo "report: $out/report.html; screenshot: docs/rehearsal.png"
