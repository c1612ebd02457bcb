"""The package version (a leaf, so that any module can read it)."""

__version__ = "0.1.0"
