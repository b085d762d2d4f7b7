"""vigil: a real-time face-watchlist system for video surveillance."""

__version__ = "0.1.0"
