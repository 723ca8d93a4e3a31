"""Randomness keyed by (seed, stream, row key): a sample draws the same numbers in any batch."""

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele et al. 2014): a bijective mix of 64-bit counters."""
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def keyed_uniform(seed: int, stream: int, keys: np.ndarray, n: int) -> np.ndarray:
    """[len(keys), n] float64 uniforms in (0, 1), a pure function of (seed, stream, key, column)."""
    head = np.array([seed % 2**64, stream % 2**64], dtype=np.uint64)
    base = _splitmix64(_splitmix64(head[:1]) ^ head[1:])
    row = _splitmix64(base ^ np.asarray(keys, dtype=np.int64).astype(np.uint64))
    with np.errstate(over="ignore"):
        cells = _splitmix64(row[:, None] + np.arange(n, dtype=np.uint64)[None, :] * _GOLDEN)
    return ((cells >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
