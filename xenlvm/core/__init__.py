"""What every job's run rests on: ownership of what xenlvm made, the run's context, the look at
the host, preflight decisions, undo, the state file, and the monitor processes' common frame."""
