"""revostack: a process orchestrator for full-stack development."""

__version__ = "0.1.0"
