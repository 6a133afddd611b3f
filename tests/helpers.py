"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""
import jax
import numpy as np


def randomize_snake(params, scale=0.3, seed=0):
    """Non-zero SnakeBeta alpha/beta (they initialise to 0, which would hide layout errors)."""
    rng = np.random.default_rng(seed)

    def f(path, x):
        name = str(path[-1])
        if "alpha" in name or "beta" in name:
            return x + scale * rng.standard_normal(x.shape).astype(np.asarray(x).dtype)
        return x

    return jax.tree_util.tree_map_with_path(f, params)
