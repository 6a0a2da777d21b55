"""The simulator on several threads: bit-identical results, NumPy's streams compiled.

Worlds run one per thread (numba ``prange``); every world draws from generators of its
own, so the thread count changes nothing, bit for bit. The reset generator is NumPy's
``default_rng`` reimplemented in compiled code: checked here against NumPy itself.
"""

from __future__ import annotations

import hashlib

import numba
import numpy as np
import pytest

from bystander.envs.intersection import kernels
from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.pcg import (
    GEN_WORDS,
    pcg64_bounded,
    pcg64_double,
    pcg64_next64,
    pcg64_seed,
)
from bystander.envs.intersection.sim import IntersectionSim

CONFIGS = ({}, {"grid": (2, 2), "n_pedestrians": 8}, {"action_type": "continuous"})


def _rollout_digest(overrides: dict, n_worlds: int, steps: int) -> str:
    """sha256 of every state array after every step of a random rollout with resets."""
    cfg = IntersectionConfig.from_dict({"max_cycles": 25, **overrides})
    sim = IntersectionSim(cfg, n_worlds=n_worlds, seed=3)
    sim.reset()
    rng = np.random.default_rng(0)
    h = hashlib.sha256()
    for k in range(steps):
        if cfg.action_type == "continuous":
            out = sim.step(rng.uniform(-1, 1, (n_worlds, 1, 2)))
        else:
            out = sim.step(rng.integers(0, 6, (n_worlds, 1)))
        done = np.flatnonzero(out.terminated[:, 0] | out.truncated)
        if k % 7 == 0:
            done = np.union1d(done, [k % n_worlds])  # resets of a few worlds, too
        for arr in (out.obs, out.rewards, out.cost, out.visible, sim.x, sim.y, sim.v, sim.uid):
            h.update(np.ascontiguousarray(arr).tobytes())
        if len(done):
            sim.reset(worlds=done)
        h.update(np.ascontiguousarray(sim.last.obs).tobytes())
    return h.hexdigest()


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba has one thread here")
@pytest.mark.parametrize("overrides", CONFIGS)
def test_rollouts_are_bit_identical_for_one_and_two_threads(overrides, monkeypatch):
    # every call takes the parallel kernels with 2 threads (1 thread: the serial twins)
    monkeypatch.setattr(kernels, "PARALLEL_MIN_WORLDS", 1)
    before = numba.get_num_threads()
    digests = {}
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            digests[threads] = _rollout_digest(overrides, n_worlds=9, steps=60)
    finally:
        numba.set_num_threads(before)
    assert digests[1] == digests[2]


def test_a_world_does_not_depend_on_the_batch():
    """World 2 of 5 (parallel kernels) draws what a one-world sim seeded 3 + 2 draws."""
    cfg = IntersectionConfig.from_dict({"max_cycles": 20})
    batch, one = IntersectionSim(cfg, n_worlds=5, seed=3), IntersectionSim(cfg, n_worlds=1)
    batch.reset()
    one.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(45):
        a = rng.integers(0, 6, (5, 1))
        out, single = batch.step(a), one.step(a[2:3])
        np.testing.assert_array_equal(out.obs[2], single.obs[0])
        if out.truncated[2]:
            batch.reset(worlds=[2])
            one.reset()
            np.testing.assert_array_equal(batch.last.obs[2], one.last.obs[0])


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**32 - 1, 2**32, 2**62 - 5, 2**64 - 1])
def test_compiled_generator_equals_numpy_default_rng(seed):
    g = np.zeros(GEN_WORDS, dtype=np.uint64)
    pcg64_seed(g, np.uint64(seed))
    ref = np.random.default_rng(seed)
    for k in range(300):  # interleaved as the resets interleave them
        op = k % 4
        if op == 0:
            assert pcg64_double(g) == ref.random()
        elif op == 1:
            n = (1, 2, 3, 7, 40, 2**31 + 7, 2**32)[k % 7]
            assert pcg64_bounded(g, n) == int(ref.integers(n, size=1)[0])
        elif op == 2:
            want = int(ref.integers(0, 2**63, size=1, dtype=np.int64)[0])
            assert int(pcg64_next64(g) >> np.uint64(1)) == want
        else:
            assert 5.0 + 15.0 * pcg64_double(g) == ref.uniform(5.0, 20.0, 1)[0]


def test_seeds_must_fit_in_64_bits():
    sim = IntersectionSim(IntersectionConfig(), n_worlds=2, seed=0)
    with pytest.raises(ValueError, match="seeds"):
        sim.seed_worlds([-1, 2])


def test_the_threading_layer_is_tbb_when_its_library_loads_else_the_workqueue():
    """Run in a fresh interpreter (the layer is chosen once per process): with the
    ``tbb`` wheel's library present (a dependency on Linux x86-64) numba picks TBB."""
    import os
    import subprocess
    import sys

    code = (
        "import numba, numpy as np; from bystander.envs.intersection import kernels; "
        "from bystander.envs.intersection.sim import IntersectionSim; "
        "from bystander.envs.intersection.config import IntersectionConfig; "
        "s = IntersectionSim(IntersectionConfig(), n_worlds=4 * kernels.PARALLEL_MIN_WORLDS, "
        "seed=0); s.reset(); print(numba.threading_layer(), kernels._preload_tbb())"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    layer, tbb_loads = out[-2], out[-1] == "True"
    assert layer == ("tbb" if tbb_loads else "workqueue")
