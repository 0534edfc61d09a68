"""meshnode."""
