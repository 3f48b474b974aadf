"""Changing an app across clusters safely: deploy now; waves, gates, lock, history next.

Owns: the order in which clusters change and what must hold before each change.
Must not: talk to an API server except through ``isthmus.kube``, or decide object contents
(that is ``isthmus.render``).
"""

from .deploying import (
    DatacenterStatus,
    DeployOptions,
    Progress,
    StatusReport,
    app_status,
    apply_app,
    delete_app,
    diff_app,
    render_app,
    wait_healthy,
)
from .secrets import SecretUnavailable, superuser_password

__all__ = [
    "DatacenterStatus",
    "DeployOptions",
    "Progress",
    "SecretUnavailable",
    "StatusReport",
    "app_status",
    "apply_app",
    "delete_app",
    "diff_app",
    "render_app",
    "superuser_password",
    "wait_healthy",
]
