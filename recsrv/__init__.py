"""recsrv: a real-time recommendation server for small online shops."""

__version__ = "0.1.0"
