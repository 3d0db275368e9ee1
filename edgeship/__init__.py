"""edgeship: take a trained model to edge devices, and prove it still works there."""

__version__ = "0.1.0"
