"""Liaison: a TAK-compatible server that guards what it releases to each partner."""

__version__ = "0.1.0"
