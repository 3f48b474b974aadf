"""The app's superuser password: generated once, kept in the control-plane cluster, never shown.

Every member cluster gets the same Secret, so the password must exist before anything is
rendered. The control plane's copy is the truth; a member's copy is used only when the control
plane cannot be reached, so a control-plane outage does not block work on healthy members.
"""

from __future__ import annotations

import base64
import secrets

from ..errors import UserError
from ..kube import ClusterConnection, ClusterRegistry, ClusterUnreachable, get_record
from ..render.naming import CassandraNames
from ..spec import CassandraCluster, Fleet

__all__ = ["SecretUnavailable", "read_superuser_password", "superuser_password"]


class SecretUnavailable(UserError):
    pass


async def read_superuser_password(conn: ClusterConnection, app: CassandraCluster) -> str | None:
    name = CassandraNames(app.metadata.name, app.namespace).superuser_secret
    secret = await get_record(conn, "v1", "Secret", name, app.namespace)
    if secret is None:
        return None
    encoded = (secret.get("data") or {}).get("password")
    return base64.b64decode(encoded).decode() if encoded else None


async def superuser_password(registry: ClusterRegistry, fleet: Fleet, app: CassandraCluster) -> str:
    """The existing password, or a new one (which the apply then stores everywhere)."""
    control = fleet.spec.control_plane
    try:
        found = await read_superuser_password(registry[control], app)
    except ClusterUnreachable as exc:
        for name in app.member_clusters():
            if name == control or name not in registry:
                continue
            try:
                found = await read_superuser_password(registry[name], app)
            except ClusterUnreachable:
                continue
            if found is not None:
                return found
        raise SecretUnavailable(
            f"the control-plane cluster {control} is unreachable ({exc.reason}) and no member holds the "
            f"superuser Secret of {app.metadata.name} yet; retry when {control} answers"
        ) from exc
    return found if found is not None else secrets.token_urlsafe(24)


