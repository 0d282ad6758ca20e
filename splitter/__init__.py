"""splitter: a reverse proxy for strangler-fig migrations."""

__version__ = "0.1.0"
