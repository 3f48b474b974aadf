"""Names of the objects rendered for a CassandraCluster, checked against Kubernetes' limits.

One place spells every name, so the seed list, the Services and the StatefulSets agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import RenderError

__all__ = ["CassandraNames"]

# A Service name is a DNS-1035 label: it must start with a letter.
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_MAX = 63
# The controller adds "-<10-char revision hash>" to the StatefulSet name for the
# controller-revision-hash label, whose value may not exceed 63 characters.
_STATEFULSET_MAX = 52


@dataclass(frozen=True)
class CassandraNames:
    app: str
    namespace: str

    def _service(self, name: str) -> str:
        if len(name) > _LABEL_MAX or not _DNS1035.match(name):
            raise RenderError(
                f"Service name {name!r} is not a DNS-1035 label (at most {_LABEL_MAX} characters, starting "
                "with a letter); shorten the CassandraCluster or datacenter name"
            )
        return name

    @property
    def service_account(self) -> str:
        return self.app

    @property
    def superuser_secret(self) -> str:
        return f"{self.app}-superuser"

    def config_map(self, dc: str) -> str:
        return f"{self.app}-{dc}-config"

    def identities(self, dc: str) -> str:
        """The ConfigMap of each node's last address in the ring (pod name -> address), which the rollout writes."""
        return f"{self.app}-{dc}-identities"

    def pods(self, dc: str, rack: str, replicas: int) -> list[str]:
        """The names of a rack's pods: its StatefulSet's ordinals 0 to ``replicas - 1``."""
        return [f"{self.statefulset(dc, rack)}-{i}" for i in range(replicas)]

    def statefulset(self, dc: str, rack: str) -> str:
        name = f"{self.app}-{dc}-{rack}"
        if len(name) > _STATEFULSET_MAX:
            raise RenderError(
                f"StatefulSet name {name!r} is {len(name)} characters; Kubernetes allows {_STATEFULSET_MAX} "
                "(its revision label adds 11); shorten the app, datacenter or rack name"
            )
        return name

    def all_service(self, dc: str) -> str:
        return self._service(f"{self.app}-{dc}-all")

    def seed_service(self, dc: str) -> str:
        return self._service(f"{self.app}-{dc}-seeds")

    def client_service(self, dc: str) -> str:
        return self._service(f"{self.app}-{dc}-client")

    def disruption_budget(self, dc: str) -> str:
        return f"{self.app}-{dc}"
