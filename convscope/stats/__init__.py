"""Mergeable streaming statistics over a whole dataset.

Each statistic is a small object with ``add(batch)``, ``merge(other)``,
``result()`` and ``state_dict()``, rebuilt from a saved state by its
constructor (the pattern of davidbau/dissect's runningstats), so a partial
result is a file and a merge is a loop.
"""

from convscope.stats.running import RunningTopK

__all__ = ["RunningTopK"]
