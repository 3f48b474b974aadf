"""Pure decisions of the kube gateway: the circuit breaker, health per kind, secret masking."""

from __future__ import annotations

from typing import Any

from isthmus.kube import Health, rollup, statefulset_health
from isthmus.kube.breaker import BreakerState, CircuitBreaker
from isthmus.kube.diffing import mask_secret, unified
from isthmus.kube.objects import ObjectRef, clean_for_compare


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_and_half_opens_after_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, cooldown=10.0, clock=clock)
    assert breaker.allow()
    breaker.failed("timeout")
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.failed("timeout")
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now = 10.5
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # exactly one trial call
    breaker.failed("still down")
    assert breaker.state is BreakerState.OPEN and breaker.last_error == "still down"
    clock.now = 21.0
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0


def sts(*, replicas: int = 3, ready: int = 3, updated: int = 3, generation: int = 2, observed: int = 2,
        current: str = "web-abc", update: str = "web-abc", partition: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "generation": generation},
        "spec": {"replicas": replicas, "updateStrategy": {"rollingUpdate": {"partition": partition}}},
        "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": updated,
                   "currentRevision": current, "updateRevision": update},
    }


def test_statefulset_health() -> None:
    assert statefulset_health(sts()).health is Health.HEALTHY
    assert statefulset_health(sts()).revision == "abc"
    stale = statefulset_health(sts(generation=3, observed=2))
    assert stale.health is Health.PROGRESSING and "observed" in stale.reason
    rolling = statefulset_health(sts(updated=1, update="web-def"))
    assert rolling.health is Health.PROGRESSING and rolling.reason == "1/3 replicas updated"
    assert statefulset_health(sts(ready=1)).health is Health.PROGRESSING
    assert statefulset_health(sts(ready=0)).health is Health.DEGRADED
    # A partitioned rollout that reached its partition is done for now.
    assert statefulset_health(sts(updated=1, update="web-def", partition=2)).health is Health.HEALTHY


def test_rollup_takes_the_worst() -> None:
    assert rollup([Health.HEALTHY, Health.PROGRESSING]) is Health.PROGRESSING
    assert rollup([Health.HEALTHY, Health.UNKNOWN, Health.DEGRADED]) is Health.UNKNOWN
    assert rollup([]) is Health.MISSING


def secret(value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "n"},
            "data": {"password": value, "username": "YWRtaW4="}}


def test_secret_values_never_appear_in_a_diff() -> None:
    text = unified(ObjectRef("v1", "Secret", "n", "s"), secret("b2xk"), secret("bmV3"))
    assert "b2xk" not in text and "bmV3" not in text
    assert "\n-  password: '***'\n+  password: '*** (changed)'\n" in text
    assert "\n   username: '***'\n" in text  # unchanged, and masked too
    assert mask_secret(secret("x"), None) == {**secret("x"), "data": {"password": "***", "username": "***"}}


def test_clean_for_compare_drops_server_fields() -> None:
    live = {"apiVersion": "v1", "kind": "ConfigMap", "status": {}, "metadata": {
        "name": "c", "resourceVersion": "7", "uid": "u", "managedFields": [], "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{}"}}}
    assert clean_for_compare(live) == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}


def test_a_diff_that_only_moves_the_fencing_token_is_no_change() -> None:
    from isthmus.kube.diffing import meaningful
    from isthmus.rollout.locking import TOKEN_ANNOTATION

    live = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n", "annotations": {
        TOKEN_ANNOTATION: "3", "isthmus.dev/content-hash": "h"}}, "data": {"k": "v"}}
    desired = {**live, "metadata": {**live["metadata"], "annotations": {"isthmus.dev/content-hash": "h"}}}
    only_token = unified(ObjectRef("v1", "ConfigMap", "n", "c"), live, desired)
    assert f"-    {TOKEN_ANNOTATION}: '3'" in only_token
    assert not meaningful(only_token, (TOKEN_ANNOTATION,)) and meaningful(only_token, ())
    edited = unified(ObjectRef("v1", "ConfigMap", "n", "c"), live, {**desired, "data": {"k": "w"}})
    assert meaningful(edited, (TOKEN_ANNOTATION,))
