"""Command-line flags of the entry points, and ``--flagfile`` presets (``*.cfg``) for named experiments."""
