"""farr: generative models of NHS patient timelines inside a secure data environment."""

__version__ = "0.1.0"
