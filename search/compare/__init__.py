"""search.compare."""
