#!/usr/bin/env bash
# `make demo`: plan the example fleet, start a lab shaped like the lab-sized example (three clusters, a
# real pod network), deploy the example Cassandra cluster (3 DCs x 2 real nodes) with `isthmus apply`, and
# show the ring through each cluster's API server: `nodetool status` by `kubectl exec`, and a row written
# at LOCAL_QUORUM in one DC and read at LOCAL_ONE in every other, through `kubectl port-forward`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
LAB=demo
mkdir -p out
cp examples/fleet.yaml out/fleet.yaml
cp examples/lab/fleet.yaml out/lab-fleet.yaml
cp examples/lab/cassandra.yaml out/cassandra.yaml

echo "== 1. Plan the example fleet (CIDRs, cluster IDs, MTU, capacity) =="
$BIN/isthmus plan -f out/fleet.yaml --report out/plan.md --map out/plan.png
echo
echo "== 2. Audit a fleet whose addresses were assigned by hand =="
$BIN/isthmus plan --check -f examples/fleet-assigned.yaml || echo "(exit $?: blockers found, as this example intends)"
echo
echo "== 3. Start a lab of three real Kubernetes clusters shaped like the lab-sized fleet =="
$BIN/isthmus lab down --name "$LAB" >/dev/null 2>&1 || true
$BIN/isthmus plan -f out/lab-fleet.yaml >/dev/null
eval "$($BIN/isthmus lab up --name "$LAB" --fleet out/lab-fleet.yaml --timeout 180)"
echo "KUBECONFIG=$KUBECONFIG"
$BIN/isthmus lab status --name "$LAB" | tail -n 1
echo
echo "== 4. Deploy Cassandra (3 DCs x 2 nodes, real JVMs in the lab's pods) and wait until healthy =="
$BIN/isthmus apply -f out/lab-fleet.yaml -f out/cassandra.yaml --wait --timeout 1200
echo
echo "== 5. Status =="
$BIN/isthmus status -f out/lab-fleet.yaml -f out/cassandra.yaml
KUBECTL=$($BIN/python -c 'from isthmus.lab.binaries import binaries_dir; print(binaries_dir() / "kubectl")')
echo
echo "== 6. The ring, as one node sees it: kubectl exec ... nodetool status =="
"$KUBECTL" --context lab-eu-west -n cassandra exec orders-dc-eu-rack-b-0 -c cassandra -- nodetool status
echo
echo "== 7. A row written at LOCAL_QUORUM in dc-eu, read at LOCAL_ONE in dc-us and dc-ap (kubectl port-forward) =="
export ISTHMUS_DEMO_USER ISTHMUS_DEMO_PASSWORD
ISTHMUS_DEMO_USER=$("$KUBECTL" --context lab-eu-west -n cassandra get secret orders-superuser -o jsonpath='{.data.username}' | base64 -d)
ISTHMUS_DEMO_PASSWORD=$("$KUBECTL" --context lab-eu-west -n cassandra get secret orders-superuser -o jsonpath='{.data.password}' | base64 -d)
forward() {  # forward CONTEXT POD LOCALPORT: a kubectl port-forward in the background, waited on until it listens
    "$KUBECTL" --context "$1" -n cassandra port-forward "pod/$2" "$3:9042" >/dev/null 2>&1 &
    for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$3") 2>/dev/null && return 0; sleep 0.2; done
    echo "port-forward to $2 did not start" >&2; return 1
}
PORTS=($($BIN/python -c 'from isthmus.lab.processes import free_ports; print(*free_ports(3))'))
forward lab-eu-west orders-dc-eu-rack-b-0 "${PORTS[0]}"; F1=$!
forward lab-us-east orders-dc-us-rack-b-0 "${PORTS[1]}"; F2=$!
forward lab-ap-south orders-dc-ap-rack-a-0 "${PORTS[2]}"; F3=$!
trap 'kill $F1 $F2 $F3 2>/dev/null || true' EXIT
$BIN/python scripts/demo_cql.py write "127.0.0.1:${PORTS[0]}" dc-eu LOCAL_QUORUM
$BIN/python scripts/demo_cql.py read "127.0.0.1:${PORTS[1]}" dc-us LOCAL_ONE
$BIN/python scripts/demo_cql.py read "127.0.0.1:${PORTS[2]}" dc-ap LOCAL_ONE
echo
echo "Report: $(pwd)/out/plan.md"
echo "Map:    $(pwd)/out/plan.png"
echo "The lab is still running for you to explore:"
echo "  export KUBECONFIG=$KUBECONFIG; $KUBECTL --context lab-us-east -n cassandra exec orders-dc-us-rack-b-0 -c cassandra -- nodetool status"
echo "Stop it with: $BIN/isthmus lab down --name $LAB"
