"""search.views."""
