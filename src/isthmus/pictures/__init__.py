"""Pictures of the network plan: the plan map, the plan view and the network map (named ``pictures``,
not ``observe``, so it cannot be confused with what reads live state, such as :func:`isthmus.rollout.gates.observe`).

Owns: turning results from the core into something a person reads or looks at.
Must not: decide anything; it only presents values it is handed.
"""

__all__: list[str] = []  # its modules (netmap, planmap, planview) are imported by name
