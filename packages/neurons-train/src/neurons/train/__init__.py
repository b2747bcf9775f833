"""neurons.train — Training, inference and CLIs for Neurons."""

__version__ = "0.1.0"

__all__ = ["__version__"]
