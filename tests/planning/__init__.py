"""Planning: the pure network planner (IDs, CIDRs, MTU, capacity, lock, check)."""
