"""Reusable measurements: each script's docstring says what it measures and how to run it."""
