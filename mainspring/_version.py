"""The package's version: a leaf module, so that the edges (client, server) can name it
without importing the package."""

__version__ = "0.1.0"
