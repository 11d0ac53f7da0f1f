"""citywatch application package: the `citywatch` command and the wiring of a running service."""

__version__ = "0.1.0"
