"""Bastion: a self-hosted AI safety platform."""

__version__ = "0.1.0"
