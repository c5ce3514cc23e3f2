"""orch: small Unix tools for running teams of AI coding agents in tmux."""

__version__ = "0.1.0"
