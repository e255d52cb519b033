"""Built-in plugins (embedders, extractors), registered as entry points like third-party ones (gateway.registry)."""
