"""Built-in plugins (embedders, extractors, rerankers) land here as the memory layers arrive."""
