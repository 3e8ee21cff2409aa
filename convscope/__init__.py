"""convscope: what has this CNN learned, over a whole image dataset."""

__version__ = "0.1.0"

__all__ = ["Results"]


def __getattr__(name):
    # `from convscope import Results` imports the results API (h5py, pandas) only when asked,
    # so `import convscope` stays light.
    if name == "Results":
        from convscope.results import Results

        return Results
    raise AttributeError(f"module 'convscope' has no attribute {name!r}")
