"""Westworld's pure core: models and rules, with no I/O, clocks or randomness of its own."""
