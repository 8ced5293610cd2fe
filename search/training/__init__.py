"""search.training.prepared."""
