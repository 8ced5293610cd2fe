"""search.engine."""
