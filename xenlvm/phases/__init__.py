"""The hooks' two phases, top to bottom: pre and post, and the registry of the target kinds they
loop over (kinds)."""
