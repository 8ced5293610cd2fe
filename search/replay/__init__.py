"""search.replay.rerun."""
