"""Linear CKA with the unbiased minibatch HSIC estimator, streamed over batches; by hand.

Linear CKA (Kornblith et al. 2019) compares two representations X (n, p) and
Y (n, q) of the same n images through their Gram matrices K = X X^T, L = Y Y^T:
CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)). Following Nguyen et al. (2021),
HSIC is the unbiased estimator of Song et al. (2012) averaged over minibatches:

    HSIC_1(K, L) = [tr(K~ L~) + 1'K~1 1'L~1 / ((m-1)(m-2)) - 2/(m-2) 1'K~L~1] / (m(m-3))

with K~, L~ the Gram matrices of a minibatch of m >= 4 images with their
diagonal set to 0, and CKA = sum_b HSIC_1(K_b, L_b) / sqrt(sum_b HSIC_1(K_b, K_b)
sum_b HSIC_1(L_b, L_b)). Memory is one minibatch's Gram matrices, whatever the
number of images; CKA(X, X) = 1, and it is unchanged by an orthogonal transform
or an isotropic scaling of X or Y. Sums in float64.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["MIN_BATCH", "gram", "hsic_unbiased", "MinibatchCKA", "rebatch"]

#: the unbiased estimator needs at least 4 images per minibatch
MIN_BATCH = 4


def gram(features: np.ndarray) -> np.ndarray:
    """(m, p) -> (m, m) float64 linear Gram matrix with its diagonal set to 0."""
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    k = x @ x.T
    np.fill_diagonal(k, 0.0)
    return k


def hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al.'s unbiased HSIC of two zero-diagonal (m, m) Gram matrices, m >= 4."""
    m = len(k)
    if m < MIN_BATCH:
        raise ValueError(f"the unbiased HSIC needs at least {MIN_BATCH} images, got {m}")
    trace = float(np.sum(k * l))
    sums = float(k.sum()) * float(l.sum()) / ((m - 1) * (m - 2))
    cross = 2.0 / (m - 2) * float(k.sum(0) @ l.sum(0))
    return (trace + sums - cross) / (m * (m - 3))


class MinibatchCKA:
    """Accumulate the HSIC of named representations over minibatches; CKA of chosen pairs.

    ``pairs``: (a, b) names whose CKA is wanted; each name's self-HSIC is kept too.
    """

    def __init__(self, pairs: Sequence[tuple[Hashable, Hashable]]):
        self.pairs = [tuple(p) for p in pairs]
        names = {n for p in self.pairs for n in p}
        self._self = {n: 0.0 for n in names}
        self._cross = {p: 0.0 for p in self.pairs}
        self.batches = 0

    def add(self, features: Mapping[Hashable, np.ndarray]) -> None:
        """One minibatch: name -> (m, ...) features of the same m images (m >= 4)."""
        grams = {n: gram(features[n]) for n in self._self}
        for n, k in grams.items():
            self._self[n] += hsic_unbiased(k, k)
        for a, b in self.pairs:
            self._cross[(a, b)] += (self._self_value(grams, a) if a == b
                                    else hsic_unbiased(grams[a], grams[b]))
        self.batches += 1

    @staticmethod
    def _self_value(grams, name) -> float:
        return hsic_unbiased(grams[name], grams[name])

    def result(self) -> dict[tuple, float]:
        """(a, b) -> CKA; NaN where a representation has no variance (HSIC <= 0)."""
        out = {}
        for a, b in self.pairs:
            denominator = self._self[a] * self._self[b]
            out[(a, b)] = (self._cross[(a, b)] / np.sqrt(denominator) if denominator > 0
                           else float("nan"))
        return out


def rebatch(chunks: Iterable[Mapping[str, np.ndarray]], batch_size: int):
    """Cut a stream of row-aligned chunks (name -> (n_i, ...)) into batches of ``batch_size``
    rows (the last one shorter; left out when under `MIN_BATCH` rows)."""
    pending: dict[str, list[np.ndarray]] = {}
    count = 0
    for chunk in chunks:
        for name, values in chunk.items():
            pending.setdefault(name, []).append(values)
        count += len(next(iter(chunk.values())))
        while count >= batch_size:
            joined = {n: np.concatenate(v) for n, v in pending.items()}
            yield {n: v[:batch_size] for n, v in joined.items()}
            pending = {n: [v[batch_size:]] for n, v in joined.items()}
            count -= batch_size
    if count >= MIN_BATCH:
        yield {n: np.concatenate(v) for n, v in pending.items()}
