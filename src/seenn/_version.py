"""The package version (one place; pyproject.toml holds the same string, a test holds the two equal)."""

__version__ = "0.1.0"
