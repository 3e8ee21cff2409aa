"""Streaming top-k: the k largest values per channel over a whole dataset.

Follows the running-statistics pattern of davidbau/dissect's runningstats:
a small object with ``add(batch)``, ``merge(other)``, ``result()`` and
``state_dict()``, rebuilt from a saved state by its constructor. It works
batch by batch on the device the batch lives on (numpy arrays on the CPU,
torch tensors on their device), so per-shard partial results are files and
combining them is a loop.

Ordering is total and deterministic: larger value first, ties broken by the
smaller id. NaN never wins: it is treated as ``-inf``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["RunningTopK"]


def _as_tensor(array, device: torch.device | None = None) -> torch.Tensor:
    """A numpy array or tensor as a tensor, moved to ``device`` when given."""
    tensor = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.asarray(array))
    return tensor if device is None else tensor.to(device)


def _values_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half precision and integers are kept as float32; float64 stays float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _order_by_value_then_id(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(C, m) column order sorting each row by value descending, then id ascending."""
    by_id = torch.sort(ids, dim=1, stable=True).indices
    values_by_id = torch.gather(values, 1, by_id)
    by_value = torch.sort(values_by_id, dim=1, descending=True, stable=True).indices
    return torch.gather(by_id, 1, by_value)


def _batch_top_columns(values: torch.Tensor, k: int) -> torch.Tensor:
    """(C, k) column indices of the k largest values per row of ``values`` (C, n).

    Columns must already be in ascending-id order, so among equal values the
    earlier column wins. `torch.topk` picks the candidates (fast); rows where
    the k-th value is tied with a value outside the pick are redone with a
    stable sort, so the result is exact.
    """
    n = values.shape[1]
    if n <= k:
        return torch.sort(values, dim=1, descending=True, stable=True).indices
    top_values, top_columns = torch.topk(values, k, dim=1, largest=True, sorted=False)
    kth = top_values.min(dim=1, keepdim=True).values
    tied = (values >= kth).sum(dim=1) > k
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        exact = torch.sort(values[rows], dim=1, descending=True, stable=True).indices[:, :k]
        top_columns[rows] = exact
    return top_columns


class RunningTopK:
    """Per channel, the ``k`` largest values seen, each with an id and a payload.

    Parameters
    ----------
    k : int
        How many entries to keep per channel (>= 1).
    state : dict, optional
        A dict from `state_dict`; restores a saved accumulator.

    Each entry carries an integer ``id`` (e.g. the manifest row of the image)
    and an integer ``payload`` (e.g. the flat spatial position of the maximum;
    ``-1`` when `add` was given none).

    Examples
    --------
    >>> topk = RunningTopK(9)
    >>> topk.add(unit_max, image_index, payload=unit_argmax)  # (n, C), (n,), (n, C)
    >>> values, ids, payload = topk.result()                  # each (C, 9)
    """

    def __init__(self, k: int, state: dict | None = None):
        if int(k) < 1:
            raise ValueError(f"RunningTopK: k must be >= 1, got {k}")
        self.k = int(k)
        self.count = 0
        self._values: torch.Tensor | None = None  # (C, k') sorted, see _order_by_value_then_id
        self._ids: torch.Tensor | None = None  # (C, k') int64
        self._payload: torch.Tensor | None = None  # (C, k') int64
        if state is not None:
            self._load(state)

    # ------------------------------------------------------------------ state

    @property
    def channels(self) -> int | None:
        """Number of channels C, or None before the first `add`."""
        return None if self._values is None else int(self._values.shape[0])

    @property
    def device(self) -> torch.device | None:
        """Device the running state lives on, or None before the first `add`."""
        return None if self._values is None else self._values.device

    def state_dict(self) -> dict:
        """``{"k", "count", "values", "ids", "payload"}``, arrays as numpy (C, k')."""
        values, ids, payload = self.result()
        return {"k": self.k, "count": self.count, "values": values, "ids": ids, "payload": payload}

    def _load(self, state: dict) -> None:
        """Restore from a `state_dict` (keeping at most ``k`` entries per channel)."""
        self.count = int(state["count"])
        if state.get("values") is None or self.count == 0:
            return
        keep = min(self.k, self.count)
        self._values = _as_tensor(np.array(state["values"])[:, :keep])
        self._values = self._values.to(_values_dtype(self._values.dtype))
        self._ids = _as_tensor(np.array(state["ids"], dtype=np.int64)[:, :keep])
        self._payload = _as_tensor(np.array(state["payload"], dtype=np.int64)[:, :keep])

    # ----------------------------------------------------------------- update

    def add(self, values, ids, payload=None) -> None:
        """Add a batch of ``n`` rows.

        Args:
            values: (n, C) float, numpy or torch (any device; the state moves
                to the device of the first batch and later batches follow it).
            ids: (n,) int64 id of each row.
            payload: (n, C) int64 per-entry payload, or None (stored as -1).
        """
        device = self.device
        values = _as_tensor(values, device)
        device = values.device
        if values.ndim != 2:
            raise ValueError(f"RunningTopK.add: values must be (n, C), got shape {tuple(values.shape)}")
        n, channels = values.shape
        if self.channels is not None and channels != self.channels:
            raise ValueError(
                f"RunningTopK.add: batch has {channels} channels, earlier batches had {self.channels}"
            )
        ids = _as_tensor(ids, device).to(torch.int64).reshape(-1)
        if ids.shape[0] != n:
            raise ValueError(f"RunningTopK.add: {n} rows of values but {ids.shape[0]} ids")
        if payload is None:
            payload = torch.full((n, channels), -1, dtype=torch.int64, device=device)
        else:
            payload = _as_tensor(payload, device).to(torch.int64)
            if tuple(payload.shape) != (n, channels):
                raise ValueError(
                    f"RunningTopK.add: payload must have the shape of values {(n, channels)}, "
                    f"got {tuple(payload.shape)}"
                )
        if n == 0:
            if self._values is None:
                self._init_empty(channels, values.dtype, device)
            return

        values = values.to(_values_dtype(values.dtype))
        # Rows in ascending id order, channels first: ties then favour earlier columns.
        by_id = torch.sort(ids, stable=True).indices
        values_t = values[by_id].T
        values_t = torch.where(torch.isnan(values_t), float("-inf"), values_t)
        columns = _batch_top_columns(values_t, self.k)  # (C, k'')
        batch_values = torch.gather(values_t, 1, columns)
        batch_ids = ids[by_id][columns]
        batch_payload = torch.gather(payload[by_id].T, 1, columns)
        self._merge_entries(batch_values, batch_ids, batch_payload, n)

    def merge(self, other: "RunningTopK") -> None:
        """Fold another accumulator (e.g. from another shard) into this one."""
        if other.count == 0 or other._values is None:
            return
        device = self.device if self.device is not None else other.device
        if self.channels is not None and other.channels != self.channels:
            raise ValueError(
                f"RunningTopK.merge: other has {other.channels} channels, this one {self.channels}"
            )
        self._merge_entries(
            other._values.to(device), other._ids.to(device), other._payload.to(device), other.count
        )

    def _init_empty(self, channels: int, dtype: torch.dtype, device: torch.device) -> None:
        """Empty (C, 0) state on ``device``."""
        self._values = torch.empty((channels, 0), dtype=_values_dtype(dtype), device=device)
        self._ids = torch.empty((channels, 0), dtype=torch.int64, device=device)
        self._payload = torch.empty((channels, 0), dtype=torch.int64, device=device)

    def _merge_entries(self, values, ids, payload, count: int) -> None:
        """Merge (C, m) candidate entries (per-row ids) that stand for ``count`` rows."""
        if self._values is None:
            self._init_empty(values.shape[0], values.dtype, values.device)
        dtype = torch.promote_types(self._values.dtype, values.dtype)
        all_values = torch.cat([self._values.to(dtype), values.to(dtype)], dim=1)
        all_ids = torch.cat([self._ids, ids], dim=1)
        all_payload = torch.cat([self._payload, payload], dim=1)
        order = _order_by_value_then_id(all_values, all_ids)[:, : self.k]
        self._values = torch.gather(all_values, 1, order)
        self._ids = torch.gather(all_ids, 1, order)
        self._payload = torch.gather(all_payload, 1, order)
        self.count += int(count)

    # ----------------------------------------------------------------- result

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(values, ids, payload)``, each (C, k') numpy, k' = min(k, rows seen).

        Each row is sorted by value descending, ties by id ascending; NaN
        inputs appear as ``-inf``. Before any `add` the arrays are (0, 0).
        """
        if self._values is None:
            empty = np.zeros((0, 0))
            return empty, empty.astype(np.int64), empty.astype(np.int64)
        return (
            self._values.detach().cpu().numpy().copy(),
            self._ids.detach().cpu().numpy().copy(),
            self._payload.detach().cpu().numpy().copy(),
        )

    def __repr__(self) -> str:
        return f"RunningTopK(k={self.k}, channels={self.channels}, count={self.count})"
