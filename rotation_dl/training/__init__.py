"""The training side: walk-forward folds, the Lightning DataModules and the fit loop."""
