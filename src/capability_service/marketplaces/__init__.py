"""Clients of marketplace seller APIs (pure HTTP and types), on the floor of `providers/`."""
