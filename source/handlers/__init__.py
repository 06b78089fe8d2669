"""One module per task family. Each registers its handlers with source.handler_registry."""
