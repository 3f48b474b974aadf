"""The seed list of each datacenter, built so a datacenter can (re)start while another is down.

Design
======
* **Seeds are the first pod (ordinal 0) of each of the first two racks of every datacenter**
  (:data:`SEED_RACKS_PER_DC`). Two racks survive the loss of one zone; more seeds only slow
  gossip convergence. Ordinal 0 is the pod that exists first and is scaled away last.
* **Local seeds first, as stable per-pod DNS names**
  ``<app>-<dc>-<rack>-0.<app>-<dc>-all.<ns>.svc.<cluster-domain>``. They exist because every
  StatefulSet names the headless ``-all`` Service as its ``serviceName``, and they resolve for
  pods that are not ready yet because that Service sets ``publishNotReadyAddresses``. A
  per-pod name resolves to that pod only, so a non-seed pod never finds itself in the seed list
  (a node that lists itself as a seed skips bootstrap and would serve empty ranges).
* **Remote seeds, one name per remote datacenter, resolved through the mesh**:
  ``<app>-<dc>-seeds.<ns>.svc.<clusterset-domain>`` (MCS ``clusterset.local``). The
  ``-seeds`` Service is headless, publishes not-ready addresses, and selects exactly the seed
  pods: the label ``isthmus.dev/seed-rack: "true"`` (set on the pod template of the first two
  racks' StatefulSets) and ``apps.kubernetes.io/pod-index: "0"``, which the StatefulSet controller
  puts on every pod (PodIndexLabel: beta and on by default since Kubernetes 1.28, GA in 1.32;
  the lab runs 1.36). ``resolve_multiple_ip_addresses_per_dns_record: "true"`` makes Cassandra
  take every address such a name returns, i.e. both seeds of the remote datacenter.
  Pod IPs are never written into configuration: they change on every reschedule.
  Exporting the ``-seeds`` Services (a ``ServiceExport`` per datacenter, or the mesh's equivalent)
  is the mesh layer's job; render emits only core Kubernetes kinds. A Cilium *global* Service is
  no substitute: it load-balances a ClusterIP, and a seed address must be a real node address
  (gossip answers from the node's own address, which would never match a virtual IP).

What Cassandra does with an unresolvable seed (verified in apache/cassandra's source)
=======================================================================================
``org.apache.cassandra.locator.SimpleSeedProvider.getSeeds()`` (trunk / 5.0) re-reads the
configuration, splits ``seeds`` on commas, skips empty entries, and resolves each host with
``InetAddressAndPort.getByName`` (or ``getAllByName`` when
``resolve_multiple_ip_addresses_per_dns_record`` is true). An ``UnknownHostException`` is caught
per host and only logged — ``WARN "Seed provider couldn't lookup host {}"`` with the comment
"not fatal... DD will bark if there end up being zero seeds" — and the loop goes on. Startup fails
only when *no* seed resolves: ``DatabaseDescriptor.applySeedProvider`` throws
``ConfigurationException("The seed provider lists no seeds.")``. Older releases (constructor-time
``InetAddress.getByName``) have the same catch-and-warn loop. So the name of a region that
is down costs a warning (and the resolver's timeout if its DNS does not answer NXDOMAIN quickly),
not the start, as long as one local seed name resolves — which is why local names come first and
always two of them where the datacenter has two racks. The parameter map is a free-form
``Map<String, String>``, so releases that predate ``resolve_multiple_ip_addresses_per_dns_record``
ignore it and take the first address per name; its value must be the *string* "true".
"""

from __future__ import annotations

from collections.abc import Sequence

from ..spec.cassandra import CassandraCluster, Datacenter
from .naming import CassandraNames

__all__ = [
    "DEFAULT_CLUSTERSET_DOMAIN",
    "DEFAULT_CLUSTER_DOMAIN",
    "SEED_RACKS_PER_DC",
    "local_seeds",
    "remote_seeds",
    "seed_list",
    "seed_racks",
]

SEED_RACKS_PER_DC = 2
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_CLUSTERSET_DOMAIN = "clusterset.local"


def seed_racks(dc: Datacenter) -> list[str]:
    """Names of the racks whose ordinal-0 pod is a seed."""
    return [rack.name for rack in dc.racks[:SEED_RACKS_PER_DC]]


def local_seeds(app: CassandraCluster, dc: Datacenter, *, cluster_domain: str) -> list[str]:
    names = CassandraNames(app.metadata.name, app.namespace)
    service = names.all_service(dc.name)
    return [
        f"{names.statefulset(dc.name, rack)}-0.{service}.{app.namespace}.svc.{cluster_domain}"
        for rack in seed_racks(dc)
    ]


def remote_seeds(app: CassandraCluster, dc: Datacenter, *, clusterset_domain: str) -> list[str]:
    names = CassandraNames(app.metadata.name, app.namespace)
    return [
        f"{names.seed_service(other.name)}.{app.namespace}.svc.{clusterset_domain}"
        for other in app.spec.datacenters
        if other.name != dc.name
    ]


def seed_list(app: CassandraCluster, dc: Datacenter, *, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
              clusterset_domain: str = DEFAULT_CLUSTERSET_DOMAIN) -> Sequence[str]:
    """``dc``'s seeds: its own seed pods first, then one mesh-wide name per other datacenter."""
    return [*local_seeds(app, dc, cluster_domain=cluster_domain),
            *remote_seeds(app, dc, clusterset_domain=clusterset_domain)]
