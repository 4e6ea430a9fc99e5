"""gpucost: what rented GPU clusters really cost, how much is idle, and what to change."""

__version__ = "0.1.0"
