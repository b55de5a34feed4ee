"""seenn: spiking neural networks that stop as soon as they know (temporal early exit, SEENN)."""

__version__ = "0.1.0"
