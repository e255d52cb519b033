"""mnx-gateway: a self-hosted memory gateway for LLM apps."""

__version__ = "0.1.0"
