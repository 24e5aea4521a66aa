"""Deciders propose decisions; the engine reviews and executes them."""
