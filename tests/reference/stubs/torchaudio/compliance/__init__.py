"""Stand-in package; see ../__init__.py."""
