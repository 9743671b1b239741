"""The package version: the one place it is written (setup.cfg reads it)."""

__version__ = "0.2.0"
