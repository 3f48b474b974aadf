#!/usr/bin/env bash
# `make demo`: plan the example three-region fleet, start a lab shaped like it, deploy the
# example Cassandra cluster into all three clusters and show its status.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
LAB=demo
mkdir -p out
cp examples/fleet.yaml out/fleet.yaml
cp examples/cassandra.yaml out/cassandra.yaml

echo "== 1. Plan the fleet (CIDRs, cluster IDs, MTU, capacity) =="
$BIN/isthmus plan out/fleet.yaml --report out/plan.md --map out/plan.png
echo
echo "== 2. Audit a fleet whose addresses were assigned by hand =="
$BIN/isthmus plan --check examples/fleet-assigned.yaml || echo "(exit $?: blockers found, as this example intends)"
echo
echo "== 3. Start a lab of three real Kubernetes control planes shaped like the fleet =="
$BIN/isthmus lab down --name "$LAB" >/dev/null 2>&1 || true
eval "$($BIN/isthmus lab up --name "$LAB" --fleet out/fleet.yaml)"
echo "KUBECONFIG=$KUBECONFIG"
echo
echo "== 4. Deploy the Cassandra cluster to every member cluster and wait until healthy =="
$BIN/isthmus apply -f out/fleet.yaml -f out/cassandra.yaml --wait --timeout 300
echo
echo "== 5. Status =="
$BIN/isthmus status -f out/fleet.yaml -f out/cassandra.yaml
echo
echo "Report: $(pwd)/out/plan.md"
echo "Map:    $(pwd)/out/plan.png"
echo "The lab is still running for you to explore:"
echo "  export KUBECONFIG=$KUBECONFIG; kubectl --context lab-eu-west get pods -n cassandra"
echo "Stop it with: $BIN/isthmus lab down --name $LAB"
