"""Training: the run configuration, the loss, the fit loop, run folders, experiments."""
