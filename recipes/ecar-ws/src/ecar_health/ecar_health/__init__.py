"""Health check for the ecar sample robot."""

__version__ = "1.0.0"
