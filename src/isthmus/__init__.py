"""Isthmus: one control plane for one distributed database across many Kubernetes clusters.

The public surface is the ``isthmus`` command, the spec models in :mod:`isthmus.spec`, and the
documented entry points re-exported here. Everything else is internal.
"""

__version__ = "0.1.0"
