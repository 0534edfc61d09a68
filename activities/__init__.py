"""One module per outside system; classes built with injected clients and settings."""
