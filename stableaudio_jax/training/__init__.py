"""Training machinery: checkpoints (and, as they land, train state, optimisers, train steps and loops)."""
