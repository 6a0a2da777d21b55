"""Both cores for one batch: numba's threads in one process vs worker processes.

The training env (``IntersectionVecEnv`` with lean infos under
``PredictabilityVecWrapper`` with the constant-velocity predictor) at ``--worlds`` N,
resets included, three ways, interleaved ``--repeats`` times (median kept):

- ``threads``: one process, numba on 2 threads (the library's default);
- ``2 workers``: two worker processes of N / 2 worlds each (one thread each); the
  main process sends each its half of the actions and joins what they send back;
- ``main + 1 worker``: the main process steps one half itself (one thread) while one
  worker steps the other.

Also ``2 apart``: two independent one-thread processes of N worlds side by side, nothing
exchanged (the most two cores can give; summed).

Workers write their observations into one shared buffer (``RawArray``) and send the rest
(rewards, dones, the wrapper's ``step_arrays`` and the infos of ended episodes, the
empty ones skipped) through a pipe, as SB3's ``SubprocVecEnv`` does for whole envs.
This is the measurement behind the README's "Worker processes instead of threads"
(not a library feature: it measured slower than the threads, see there).

Usage::

    python experiments/benchmarks/processes.py [--worlds 1024] [--steps 400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from multiprocessing.reduction import ForkingPickler
from types import MappingProxyType
from typing import Any

import numpy as np

WARMUP = 200  # steps before timing: episodes drift out of phase, kernels compiled


def _stack(n: int, seed: int, threads: int) -> Any:
    """The training env of ``n`` worlds, world ``i`` seeded ``seed + i``."""
    import numba

    from bystander.agents.predictors import ConstantVelocityPredictor
    from bystander.envs.intersection.vec_env import IntersectionVecEnv
    from bystander.envs.vector import PredictabilityVecWrapper

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return PredictabilityVecWrapper(
        IntersectionVecEnv(n, seed=seed, info_mode="lean"), ConstantVelocityPredictor()
    )


def _read_only(mapping: dict) -> MappingProxyType:
    return MappingProxyType(mapping)


def _worker(conn: Any, n: int, seed: int, buffer: Any, lo: int, shape: tuple) -> None:
    """Step a shard of ``n`` worlds on the actions received; observations into rows
    ``lo:lo + n`` of the shared buffer, the rest back through ``conn``."""
    from bystander.envs.contract import step_arrays

    # the ended episodes' EgoStep context is a read-only mapping: send it as one
    ForkingPickler.register(MappingProxyType, lambda m: (_read_only, (dict(m),)))

    venv = _stack(n, seed, threads=1)
    rows = np.frombuffer(buffer, np.float32).reshape(shape)[lo : lo + n]
    rows[...] = venv.reset()
    conn.send("ready")
    while (actions := conn.recv()) is not None:
        obs, rewards, dones, infos = venv.step(actions)
        rows[...] = obs
        ended = [(i, infos[i]) for i in np.flatnonzero(dones).tolist()]
        conn.send((rewards, dones, ended, dict(step_arrays(venv))))
    conn.close()


def _join(parts: list[Any]) -> Any:
    """Per-shard ``step_arrays`` joined along the world axis (dicts key by key)."""
    if isinstance(parts[0], dict):
        return {k: _join([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


class _Sharded:
    """``local`` worlds stepped here, the rest in one worker per entry of ``remote``."""

    def __init__(self, n: int, local: int, remote: list[int]) -> None:
        ctx = mp.get_context("forkserver")
        probe = _stack(1, 0, threads=1)
        self.shape = (n, *probe.observation_space.shape)
        self.buffer = ctx.RawArray("f", int(np.prod(self.shape)))  # float32, shared
        self.obs = np.frombuffer(self.buffer, np.float32).reshape(self.shape)
        self.local = _stack(local, 0, threads=1) if local else None
        if self.local is not None:
            self.local.reset()
        self.bounds, self.conns, self.procs, lo = [], [], [], local
        for size in remote:
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=_worker, args=(theirs, size, lo, self.buffer, lo, self.shape), daemon=True
            )
            proc.start()
            theirs.close()  # a worker that dies then reads as EOF here, not a hang
            self.conns.append(mine)
            self.procs.append(proc)
            self.bounds.append((lo, lo + size))
            lo += size
        for conn in self.conns:
            if conn.recv() != "ready":  # (a worker that died raises EOFError here)
                raise RuntimeError("a worker did not start")
        self.n_local = local

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        """All worlds' observations, rewards, dones, infos and ``step_arrays``, joined
        as one VecEnv of all worlds would return them."""
        for conn, (lo, hi) in zip(self.conns, self.bounds, strict=True):
            conn.send(actions[lo:hi])
        parts, los = [], []
        if self.local is not None:
            from bystander.envs.contract import step_arrays

            obs, rewards, dones, infos = self.local.step(actions[: self.n_local])
            self.obs[: self.n_local] = obs
            ended = [(i, infos[i]) for i in np.flatnonzero(dones).tolist()]
            parts.append((rewards, dones, ended, dict(step_arrays(self.local))))
            los.append(0)
        for conn, (lo, _) in zip(self.conns, self.bounds, strict=True):
            parts.append(conn.recv())
            los.append(lo)
        infos: list[Any] = [{}] * len(actions)
        for lo, part in zip(los, parts, strict=True):
            for i, info in part[2]:
                infos[lo + i] = info
        return (
            self.obs.copy(),
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            infos,
            _join([p[3] for p in parts]),
        )

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
            except OSError:  # that worker is gone already
                pass
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()


def _rate(step: Any, n: int, steps: int) -> float:
    """World-steps/s of ``steps`` random steps after the warm-up."""
    rng = np.random.default_rng(0)
    for _ in range(WARMUP):
        step(rng.integers(0, 6, size=n))
    t0 = time.perf_counter()
    for _ in range(steps):
        step(rng.integers(0, 6, size=n))
    return steps * n / (time.perf_counter() - t0)


def _alone(conn: Any, n: int, steps: int) -> None:
    """One independent training env of ``n`` worlds; sends its rate."""
    venv = _stack(n, 0, threads=1)
    venv.reset()
    conn.send(_rate(venv.step, n, steps))
    conn.close()


def _apart(n: int, steps: int) -> float:
    """Two :func:`_alone` processes side by side; their rates summed."""
    ctx = mp.get_context("forkserver")
    pipes = [ctx.Pipe() for _ in range(2)]
    procs = [
        ctx.Process(target=_alone, args=(theirs, n, steps), daemon=True) for _, theirs in pipes
    ]
    for proc, (_, theirs) in zip(procs, pipes, strict=True):
        proc.start()
        theirs.close()  # a child that dies then reads as EOF here, not a hang
    total = sum(mine.recv() for mine, _ in pipes)
    for proc in procs:
        proc.join()
    return total


def measure(n: int, steps: int) -> dict[str, float]:
    """One repeat of every way (world-steps/s)."""
    out = {}
    venv = _stack(n, 0, threads=2)
    venv.reset()
    out["threads (1 process, numba 2 threads)"] = _rate(venv.step, n, steps)
    for name, local, remote in (
        ("2 workers (N / 2 each)", 0, [n // 2, n - n // 2]),
        ("main + 1 worker (N / 2 each)", n // 2, [n - n // 2]),
    ):
        env = _Sharded(n, local, remote)
        try:
            out[name] = _rate(env.step, n, steps)
        finally:
            env.close()
    out["2 apart (N each, nothing exchanged; summed)"] = _apart(n, steps)
    return out


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worlds", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    runs = [measure(args.worlds, args.steps) for _ in range(args.repeats)]
    lines = [
        f"N = {args.worlds}, training env (vec+cv), {args.steps} steps after {WARMUP}, "
        f"median of {args.repeats}, load average {os.getloadavg()[0]:.2f}",
        "",
        "| way | world-steps/s | vs threads |",
        "|---|---|---|",
    ]
    base = statistics.median(r["threads (1 process, numba 2 threads)"] for r in runs)
    for name in runs[0]:
        rate = statistics.median(r[name] for r in runs)
        lines.append(f"| {name} | {rate:,.0f} | {rate / base:.2f}x |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
