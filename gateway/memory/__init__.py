"""Long-term memory: storage, versioning, search and recall (seeds 002 and 003)."""
