"""Training: the epoch loop, its callbacks and checkpoints, phases, losses, optimisers and per-task objectives."""
