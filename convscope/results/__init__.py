"""A Python API over a run's ``results/`` folder: `Results` (DataFrames and lazy arrays).

Example::

    from convscope import Results
    results = Results("results")
    results.topk("relu3", unit=17)
"""

from convscope.results.arrays import ShardArray
from convscope.results.outputs import StageOutput
from convscope.results.results import Results
from convscope.results.stages import StageMissingError

__all__ = ["Results", "ShardArray", "StageOutput", "StageMissingError"]
