"""The lab's pod runtime: real processes for the pods whose images the lab can run (Cassandra, the guard).

Owns, one module each: the runtime loop and per-pod workers (:mod:`.runtime`), container processes, logs,
exec and probes (:mod:`.containers`), the in-namespace program that builds a container's root
(:mod:`.container`), the images (:mod:`.imagefs`), volumes and the storage provisioner (:mod:`.volumes`),
status documents (:mod:`.status`), and the ``kubectl exec`` dispatcher that kwok runs (:mod:`.dispatch`).
Must not: be imported by product code; only :mod:`isthmus.lab` starts it, one process per cluster.
"""
