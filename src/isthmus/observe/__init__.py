"""Showing what is going on: tables, reports, pictures, and later metrics, flows and latency.

Owns: turning results from the core into something a person reads or looks at.
Must not: decide anything; it only presents values it is handed.
"""

__all__: list[str] = []  # its modules (netmap, planmap, planview) are imported by name
