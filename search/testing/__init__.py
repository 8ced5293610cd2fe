"""search.testing."""
