"""The Kubernetes operator: ``isthmus operator run`` reconciles CassandraCluster objects into member clusters.

Owns: the CRDs, generated from the spec models (:mod:`.crds`), and the install manifests
(:mod:`.manifests`); the member registry built from kubeconfig Secrets (:mod:`.members`); the
kopf handlers (:mod:`.handlers`, thin) and the process plumbing around them (:mod:`.running`:
endpoints, Secret watch, probes, leadership); reading objects into spec models (:mod:`.inputs`);
what one reconcile does (:mod:`.reconciling`); the watches on the objects apps own in member
clusters, and what their events mean (:mod:`.watches`); the status and conditions written back
(:mod:`.status`); metrics and probes (:mod:`.metrics`); Lease-based leadership
(:mod:`.leadership`); settings (:mod:`.settings`) and the ``isthmus operator`` commands (:mod:`.cli`).
kopf is imported in this package only.
Must not: decide what objects a member cluster holds (that is ``render``), in what order
clusters change (that is ``rollout``), or reach a member cluster except through
``isthmus.kube`` and ``isthmus.rollout`` -- the CLI and the operator run the same engine.
"""

from __future__ import annotations

from .crds import crd_documents, crds_yaml

__all__ = ["crd_documents", "crds_yaml"]
