#!/usr/bin/env bash
# `make demo`: plan the example three-region fleet and show where the report and the map are.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
mkdir -p out
echo "== Planning examples/fleet.yaml (three regions) =="
# The demo plans into out/ so the example lock in examples/ stays as committed.
cp examples/fleet.yaml out/fleet.yaml
$BIN/isthmus plan out/fleet.yaml --report out/plan.md --map out/plan.png
echo
echo "== Checking the planned allocations with --check =="
$BIN/isthmus plan --check examples/fleet-assigned.yaml || echo "(exit $? -- the check found blockers, as expected for this example)"
echo
echo "Report: $(pwd)/out/plan.md"
echo "Map:    $(pwd)/out/plan.png"
echo "Lock:   $(pwd)/out/fleet.lock.yaml"
