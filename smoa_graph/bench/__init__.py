"""Offline benchmark datasets (committed subsets with provenance) and answer scorers."""
