"""convscope: what has this CNN learned, over a whole image dataset."""

__version__ = "0.1.0"
