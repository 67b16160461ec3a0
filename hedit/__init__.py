"""hedit: find H-neurons in chat LLMs and write edited models that carry the fix with them."""

__version__ = "0.1.0"
