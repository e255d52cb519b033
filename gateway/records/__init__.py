"""Records (contract §10): schema-backed structured data, queried, searched, recalled and learned."""
