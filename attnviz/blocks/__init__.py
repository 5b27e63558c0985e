"""Attention blocks, one family a file; each registers itself by name (see `catalog.CATALOG`)."""
