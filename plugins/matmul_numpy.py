#!/usr/bin/env python3
# celerity-check: --task plugins.mat_mul_numpy --args [3,3] --nondeterministic
"""Celerity plugin: multiply two random matrices with numpy.

Task plugins.mat_mul_numpy(m, n): an m×n and an n×m matrix of uniform random floats in
[0, 1); returns their m×m product as a list of m lists of floats. Its schema (answered to
`describe`) says m and n are integers of at least 1: Annotated adds JSON Schema keywords to
a type.
"""
from typing import Annotated

import numpy as np

from celerity_plugin import task, run


@task("plugins.mat_mul_numpy", queue="plugins", time_limit=60)
def mat_mul(m: Annotated[int, {"minimum": 1}], n: Annotated[int, {"minimum": 1}]) -> list[list[float]]:
    """The m×m product of a random m×n and a random n×m matrix (uniform in [0, 1))."""
    for name, value in (("m", m), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("%s must be a positive integer, got %r" % (name, value))
    rng = np.random.default_rng()
    a = rng.random((m, n))
    b = rng.random((n, m))
    return (a @ b).tolist()


if __name__ == "__main__":
    run(name="matmul_numpy")
