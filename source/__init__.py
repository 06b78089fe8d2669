"""headless-wan: a headless worker daemon for AI video generation."""

__version__ = "0.1.0"
