"""Service functions: one per use case, each given the store and keyword arguments."""
