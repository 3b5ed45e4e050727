"""The hooks' two phases, top to bottom: pre and post (with teardown)."""
