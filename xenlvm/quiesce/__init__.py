"""Application-consistent snapshots: freezing and thawing guests, the guard that thaws them, and
check's look at it."""
