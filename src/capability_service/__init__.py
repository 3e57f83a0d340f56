"""Capability Service: image processing for marketplace sellers, exposed as plugins and async jobs."""

__version__ = "0.1.0"
