"""Data sources, the manifest that describes them, and torch datasets over it."""
