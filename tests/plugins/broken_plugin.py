"""A test plugin that fails to import."""

raise ImportError("libacme.so not found")
