"""Subcommands of the `citywatch` command line, one module each."""
