"""modematrix runtime: one server, one entry point, the services chosen by configuration."""

__version__ = "0.1.0"
__all__ = ["__version__"]
