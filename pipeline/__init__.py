"""Newsletter and social-post publishing pipeline."""

__version__ = "0.1.0"
