"""Reliability campaign: fuzzed inputs, corrupted checkpoints, kills during training.

    python experiments/reliability/campaign.py                 # the full campaign
    python experiments/reliability/campaign.py --quick         # a smoke run (seconds)
    python experiments/reliability/campaign.py --soak-steps 2000000

Every case is classified:

- ``ok``: the input is valid and the library handled it (finite observations, rewards
  and costs; a correct answer check);
- ``clear error``: the input is invalid and was refused with a ``ValueError`` /
  ``TypeError`` / ``RuntimeError`` / ``OSError`` whose message names it (for the CLI:
  exit status 2 and one error line, no traceback);
- ``obscure crash``: any other exception, a message that names nothing, a traceback,
  or a valid input refused;
- ``silently wrong``: an invalid input accepted, a non-finite output, a corrupted
  checkpoint loaded, a wrong answer scored correct, a metrics log that lost rows.

Kill trials start ``bystander train`` with frequent checkpoints, ``kill -9`` it at a
random moment (often mid-write), resume it to the end and check that the resumed run
finished and its ``logs/progress.csv`` holds every rollout once, from the first.

Prints one line per category and the total:
``tried N, clear errors A, obscure crashes B, silently wrong C``. Exits 1 when B or C
is not 0. The property-based tests (``tests/envs/test_fuzz.py``) use the same oracles.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

__all__ = ["CLEAR", "Outcome", "is_clear_error", "main", "valid_action", "valid_vec_actions"]

CLEAR = (ValueError, TypeError, RuntimeError, OSError)
"""Exception types a clear refusal may have (its message must also name the input)."""
Outcome = str  # "ok" | "clear" | "obscure" | "wrong"
TINY = {"max_agents": 8, "n_cars": 2, "n_pedestrians": 1, "n_cyclists": 1, "max_cycles": 12}
"""Small worlds: an accepted config steps in milliseconds."""
TRAIN = ["--n-envs", "4", "--set", "train.hyperparams.n_steps=64",
         "--set", "train.hyperparams.batch_size=64", "--set", "train.tensorboard=false",
         "--no-evaluate"]  # fmt: skip
"""A tiny training run: rollouts of 256 steps."""


# ------------------------------------------------------------------------ oracles


def valid_action(action: Any, action_type: str) -> bool:
    """The intersection env's documented action contract: an integer meta-action in
    [0, 6) (factored: [0, 12)), or two finite real numbers in [-1, 1] (acceleration,
    steering)."""
    try:
        arr = np.asarray(action)
    except (TypeError, ValueError):
        return False
    n_actions = {"discrete": 6, "factored": 12}.get(action_type)
    if arr.dtype.kind not in ("iu" if n_actions else "iuf"):
        return False
    if n_actions:
        return arr.shape == () and 0 <= int(arr) < n_actions
    arr = arr.astype(np.float64)
    return arr.shape == (2,) and bool(np.isfinite(arr).all()) and bool((abs(arr) <= 1).all())


def valid_vec_actions(actions: Any, n: int, action_type: str) -> bool:
    """The VecEnv's documented contract for a batch of ``n`` worlds: meta-actions of
    shape ``(n,)`` or ``(n, 1)``, ints or integral floats in [0, 6) ([0, 12) factored); or finite real
    numbers of shape ``(n, 2)`` or ``(n, 1, 2)`` (clipped to [-1, 1], as SB3's
    algorithms clip theirs)."""
    try:
        arr = np.asarray(actions)
    except (TypeError, ValueError):
        return False
    n_actions = {"discrete": 6, "factored": 12}.get(action_type)
    if n_actions:
        if arr.shape not in ((n,), (n, 1)) or arr.dtype.kind not in "iuf":
            return False
        return bool(np.all(arr == np.round(arr)) and np.all((arr >= 0) & (arr < n_actions)))
    if arr.shape not in ((n, 2), (n, 1, 2)) or arr.dtype.kind not in "iuf":
        return False
    return bool(np.isfinite(arr.astype(np.float64)).all())


def is_clear_error(err: BaseException, *names: str) -> bool:
    """A refusal is clear when it has a plain type and its message names the input."""
    msg = str(err)
    return isinstance(err, CLEAR) and any(n and n in msg for n in names)


def _finite(*values: Any) -> bool:
    try:
        return all(np.isfinite(np.asarray(v, dtype=float)).all() for v in values)
    except (TypeError, ValueError):
        return False


def _judge(run: Callable[[], bool], valid: bool | None, *names: str) -> Outcome:
    """Run a case: ``run()`` returns whether its outputs are right; ``valid`` says
    whether the input should be accepted (None: either, as long as a refusal is clear)."""
    try:
        right = run()
    except BaseException as err:  # noqa: BLE001 - classified here
        if isinstance(err, KeyboardInterrupt):
            raise
        if valid:
            return "obscure"  # a valid input refused
        return "clear" if is_clear_error(err, *names) else "obscure"
    if valid is False or not right:
        return "wrong"
    return "ok"


# -------------------------------------------------------------------------- cases


def _odd_value(rng: random.Random, default: Any) -> Any:
    """A value for a field: half the time near its default (same type), else odd."""
    if rng.random() < 0.5 and isinstance(default, (int, float)) and not isinstance(default, bool):
        scaled = default * rng.choice([0.5, 0.8, 1.0, 1.25, 2.0])
        return type(default)(scaled)
    pool = [0, 1, 2, -1, 0.5, -0.5, 1e-300, 1e300, -1e300, float("inf"), float("nan"),
            True, None, "x", "", (1, 2), (0, 1), (60, 60), [2, 2], 10**9, 3.5, 100, 0.05,
            np.int64(3), np.float32(0.2), np.bool_(True), {"a": 1}]  # fmt: skip
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(pool)
    if roll < 0.6:
        return rng.randint(-5, 600)
    return rng.uniform(-10, 200)


def config_cases(n: int, seed: int) -> Iterator[tuple[str, Outcome]]:
    """Fuzzed env configs through the Gymnasium, SB3 VecEnv and PettingZoo APIs."""
    from bystander.envs.intersection.config import IntersectionConfig
    from bystander.envs.intersection.gym_env import IntersectionEnv
    from bystander.envs.intersection.vec_env import IntersectionVecEnv
    from bystander.envs.intersection_v0 import parallel_env

    rng = random.Random(seed)
    fields = IntersectionConfig.field_names()
    defaults = IntersectionConfig()
    for i in range(n):
        keys = [rng.choice(fields) for _ in range(rng.randint(1, 3))]
        overrides: dict[Any, Any] = {k: _odd_value(rng, getattr(defaults, k)) for k in keys}
        if rng.random() < 0.05:
            overrides[rng.choice([1, "zzz", ("t",)])] = 3  # unknown keys of any type
        api = ("gym", "vec", "pettingzoo")[i % 3]

        def run(api: str = api, overrides: dict = overrides, i: int = i) -> bool:
            cfg = IntersectionConfig.from_dict({**TINY, **overrides})
            if api == "gym":
                env = IntersectionEnv(config=cfg)
                outs = [env.reset(seed=i)[0]]
                for _ in range(cfg.max_cycles):
                    obs, r, term, trunc, info = env.step(env.action_space.sample())
                    outs += [obs, r, info["cost"]]
                    if term or trunc:
                        break
            elif api == "vec":
                venv = IntersectionVecEnv(2, cfg.to_dict(), seed=i)
                outs = [venv.reset()]
                for _ in range(cfg.max_cycles + 2):
                    acts = np.stack([venv.action_space.sample() for _ in range(2)])
                    obs, r, _, infos = venv.step(acts)
                    outs += [obs, r, [x.get("cost", 0.0) for x in infos]]
            else:
                env = parallel_env(**cfg.to_dict())
                obs, _ = env.reset(seed=i)
                outs = list(obs.values())
                while env.agents:
                    obs, r, _, _, _ = env.step(
                        {a: env.action_space(a).sample() for a in env.agents}
                    )
                    outs += [*obs.values(), *r.values()]
            return _finite(*outs)

        yield f"config/{api}", _judge(run, None, "config", *map(str, overrides))


def action_cases(n: int, seed: int) -> Iterator[tuple[str, Outcome]]:
    """Fuzzed actions through the wrapped Gymnasium env, the VecEnv and PettingZoo."""
    from bystander.agents.predictors import ConstantVelocityPredictor
    from bystander.envs.constraints import LagrangeMultiplier, LagrangianReward
    from bystander.envs.intersection.gym_env import IntersectionEnv
    from bystander.envs.intersection.vec_env import IntersectionVecEnv
    from bystander.envs.intersection_v0 import parallel_env
    from bystander.envs.predictability import PredictabilityReward

    rng = random.Random(seed)
    pool = [None, "go", True, 2.0, 1.5, -1, 6, 99, 3, np.int64(2), [1], [0.1, 0.2],
            [0.1], [2.0, 0.0], [np.nan, 0.0], [np.inf, 0.0], [1 + 1j, 0.0], [True, False],
            ["0.5", "0.1"], np.zeros(2), np.zeros(2, np.float32), [[0.1, 0.2]], object()]  # fmt: skip
    envs: dict[tuple[str, str], Any] = {}
    for i in range(n):
        kind = ("discrete", "continuous")[i % 2]
        api = ("gym", "vec", "pettingzoo")[(i // 2) % 3]
        action = rng.choice(pool) if rng.random() < 0.7 else rng.randint(-2, 8)
        if api == "vec":
            try:
                action = np.stack([np.asarray(action)] * 2)
            except (TypeError, ValueError):
                action = [action, action]
            valid = valid_vec_actions(action, 2, kind)
        else:
            valid = valid_action(action, kind)
        key = (api, kind)
        if key not in envs:
            cfg = {**TINY, "action_type": kind, "max_cycles": 10_000}
            if api == "gym":
                env = PredictabilityReward(
                    IntersectionEnv(config=cfg), ConstantVelocityPredictor(horizon=5, history=4)
                )
                envs[key] = LagrangianReward(env, LagrangeMultiplier(budget=0.2))
                envs[key].reset(seed=seed)
            elif api == "vec":
                envs[key] = IntersectionVecEnv(2, cfg, seed=seed)
                envs[key].reset()
            else:
                envs[key] = parallel_env(**cfg)
                envs[key].reset(seed=seed)
        env = envs[key]

        def run(api: str = api, env: Any = env, action: Any = action, i: int = i) -> bool:
            if api == "gym":
                obs, r, term, trunc, info = env.step(action)
                if term or trunc:
                    env.reset(seed=i)
                return _finite(obs, r, info["cost"], info["predictability"])
            if api == "vec":
                obs, r, _, _ = env.step(action)
                return _finite(obs, r)
            if not env.agents:
                env.reset(seed=i)
            obs, r, _, _, _ = env.step({a: action for a in env.agents})
            return _finite(*obs.values(), *r.values())

        yield f"action/{api}", _judge(run, valid, "action")


def text_cases(n: int, seed: int) -> Iterator[tuple[str, Outcome]]:
    """Completions for Text-v0 and answers for the arithmetic verifier."""
    from bystander.envs.text_tasks import ArithmeticVerifier, Task, normalise_number
    from bystander.envs.text_v0 import TextEnv

    rng = random.Random(seed)
    env = TextEnv(num_tasks=4, views="prefix:0.5,full")
    verifier = ArithmeticVerifier()
    for i in range(n):
        if i % 2 == 0:  # the verifier against exact decimal arithmetic
            digits = rng.randint(1, 400)
            truth = "".join(rng.choice("0123456789") for _ in range(digits)).lstrip("0") or "0"
            guess = truth if rng.random() < 0.5 else str(int(truth) + rng.choice([-1, 1, 10**6]))
            task = Task("q", normalise_number(truth), "")

            def run(guess: str = guess, truth: str = truth, task: Task = task) -> bool:
                score = verifier(f"#### {guess}", task)
                return score["correct"] == float(Decimal(guess) == Decimal(truth))

            yield "text/verifier", _judge(run, True, "answer")
            continue
        pool: list[Any] = [
            "#### 7", "", "ü\ufffd", "x" * 5000, b"\xff\xfe 7", "ok \ud800", 3.5, None,
            np.array([3, 4, 5]), np.array([-1, 4]), np.array([10**6]), np.array([1.5, 2.0]),
            np.zeros((2, 2), np.int64), ["a"],
        ]  # fmt: skip
        action = rng.choice(pool)
        valid = isinstance(action, bytes) or (isinstance(action, str) and "\ud800" not in action)
        if isinstance(action, np.ndarray) and action.ndim == 1 and action.dtype.kind == "i":
            valid = bool((action >= 0).all() and (action < 384).all())

        def run(action: Any = action, i: int = i) -> bool:
            env.reset(seed=i)
            _, r, *_ = env.step(action)
            return _finite(r)

        yield "text/env", _judge(run, valid, "action")


def run_config_cases(n: int, seed: int) -> Iterator[tuple[str, Outcome]]:
    """Dotted ``--set`` overrides of the driving run config."""
    from bystander.config import load_config

    rng = random.Random(seed)
    keys = ["train.n_envs", "train.seed", "train.algo", "train.vec_env", "train.total_timesteps",
            "constraint.mode", "constraint.budget", "constraint.lambda_lr", "constraint.weight",
            "constraint.lambda_min", "predictor.kind", "predictor.horizon", "eval.episodes",
            "review.threshold", "env.config.dt", "env.config.grid", "nope.key", "train.nope"]  # fmt: skip
    values = ["0", "-1", "1", "abc", "1e300", "nan", "inf", "[1, 2]", "null", "true", "ppo",
              "pid", "lagrangian", "shaping", "batched", "0.5", "{a: 1}", "''"]  # fmt: skip
    for _ in range(n):
        key, value = rng.choice(keys), rng.choice(values)

        def run(key: str = key, value: str = value) -> bool:
            cfg = load_config(overrides=[f"{key}={value}"])
            return cfg.train.n_envs >= 1 and cfg.eval.episodes >= 1

        yield "run-config", _judge(run, None, key, key.split(".")[-1])


def cli_cases(seed: int) -> Iterator[tuple[str, Outcome]]:
    """Misuse of the ``bystander`` command: exit 2 and one error line, no traceback."""
    tmp = Path(tempfile.mkdtemp(prefix="campaign-cli-"))
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_bytes(b"train: [1, 2\n")
    blocker = tmp / "file"
    blocker.write_text("x")
    cases = [
        ["train", "--n-envs", "0"], ["train", "--timesteps", "-5"], ["config", "-c", str(bad_yaml)],
        ["config", "-c", str(tmp / "missing.yaml")], ["config", "--set", "env.config.dt=-1"],
        ["config", "--set", "nope=1"], ["evaluate", str(tmp / "no-run")],
        ["render", str(tmp / "no-run"), "--max-steps", "-1"], ["train", "--resume", str(tmp)],
        ["config", "--set", "constraint.mode=bogus"], ["train", "--run-dir", str(blocker / "r")],
    ]  # fmt: skip
    try:
        for args in cases:
            proc = subprocess.run(
                [sys.executable, "-m", "bystander.cli", *args], capture_output=True, text=True,
                timeout=120, env={**os.environ, "BYSTANDER_DEBUG": ""},
            )  # fmt: skip
            clear = proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr
            yield "cli", "clear" if clear else "obscure"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _train(run_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bystander.cli", "train", "--run-dir", str(run_dir), *args,
         *TRAIN], capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def checkpoint_cases(n: int, seed: int, work: Path) -> Iterator[tuple[str, Outcome]]:
    """Corrupted checkpoints: every damage is refused with CheckpointError."""
    from bystander.agents.checkpoint import CheckpointError, load_checkpoint

    run = work / "ckpt-source"
    proc = _train(run, "--timesteps", "512")
    if proc.returncode != 0:
        raise RuntimeError(f"campaign: the source run failed:\n{proc.stderr}")
    source = sorted((run / "checkpoints").glob("step_*"))[-1]
    rng = random.Random(seed)
    damages = ("flip", "truncate", "delete", "garbage", "manifest-key", "manifest-json")
    for i in range(n):
        ck = work / f"ckpt-{i}" / source.name
        shutil.copytree(source, ck)
        damage = damages[i % len(damages)]
        files = sorted(p for p in ck.iterdir() if p.name != "manifest.json")
        target = rng.choice(files)
        if damage == "flip":
            data = bytearray(target.read_bytes())
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            target.write_bytes(bytes(data))
        elif damage == "truncate":
            target.write_bytes(target.read_bytes()[: rng.randrange(target.stat().st_size)])
        elif damage == "delete":
            target.unlink()
        elif damage == "garbage":
            target.write_bytes(os.urandom(rng.randint(0, 64)))
        elif damage == "manifest-key":
            m = json.loads((ck / "manifest.json").read_text())
            m.pop(rng.choice(["files", "step", "format"]))
            (ck / "manifest.json").write_text(json.dumps(m))
        else:
            (ck / "manifest.json").write_bytes(b"{\xff")

        def run(ck: Path = ck) -> bool:
            load_checkpoint(ck)
            return False  # loaded a damaged checkpoint

        try:
            run()
            yield f"checkpoint/{damage}", "wrong"
        except CheckpointError:
            yield f"checkpoint/{damage}", "clear"
        except BaseException:  # noqa: BLE001
            yield f"checkpoint/{damage}", "obscure"


def _logged_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "logs" / "progress.csv", newline="") as f:
        return [int(float(r["time/total_timesteps"])) for r in csv.DictReader(f)]


def kill_cases(n: int, seed: int, work: Path) -> Iterator[tuple[str, Outcome]]:
    """``kill -9`` during training (checkpoints every rollout), then resume to the end."""
    rng = random.Random(seed)
    total = 2048
    for i in range(n):
        run = work / f"kill-{i}"
        cmd = [sys.executable, "-m", "bystander.cli", "train", "--run-dir", str(run),
               "--timesteps", str(total), "--set", "train.checkpoint_every=256", *TRAIN]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(run.glob("checkpoints/step_*")):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))  # often mid-rollout, sometimes mid-write
        proc.send_signal(signal.SIGKILL)
        if proc.wait() != -signal.SIGKILL:
            yield "kill/finished-first", "ok"  # not a kill trial: counted apart
            continue
        resumed = _train(run, "--resume", str(run), "--timesteps", str(total))
        if resumed.returncode != 0:
            yield "kill", "obscure"
            continue
        steps = _logged_steps(run)
        yield "kill", "ok" if steps == list(range(256, total + 1, 256)) else "wrong"


def soak(steps: int, seed: int) -> Iterator[tuple[str, Outcome]]:
    """A long VecEnv + predictability run: finite outputs, flat memory."""
    import resource

    from bystander.agents.predictors import ConstantVelocityPredictor
    from bystander.envs.intersection.vec_env import IntersectionVecEnv
    from bystander.envs.vector import PredictabilityVecWrapper

    n = 64
    venv = PredictabilityVecWrapper(
        IntersectionVecEnv(n, {}, seed=seed, info_mode="lean"),
        ConstantVelocityPredictor(horizon=10, history=8),
    )
    venv.reset()
    rng = np.random.default_rng(seed)
    rss = []
    for t in range(steps // n):
        obs, r, _, _ = venv.step(rng.integers(0, 6, n))
        if t % 1000 == 0:
            rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            if not _finite(obs, r):
                yield "soak", "wrong"
                return
    grew = len(rss) > 4 and rss[-1] > 1.2 * rss[len(rss) // 4]
    yield "soak", "wrong" if grew else "ok"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smoke run: a few cases of each kind")
    p.add_argument("--cases", type=int, default=620, help="fuzzed configs and actions, each")
    p.add_argument("--kills", type=int, default=13)
    p.add_argument("--corruptions", type=int, default=36)
    p.add_argument("--soak-steps", type=int, default=0, help="world-steps of the soak (0: none)")
    p.add_argument("--verbose", action="store_true", help="print each obscure or wrong case")
    args = p.parse_args(argv)
    if args.quick:
        args.cases, args.kills, args.corruptions = 12, 1, 6
    work = Path(tempfile.mkdtemp(prefix="bystander-campaign-"))
    counts: dict[str, Counter] = {}
    t0 = time.perf_counter()
    sources = [
        config_cases(args.cases, args.seed),
        action_cases(args.cases, args.seed + 1),
        text_cases(args.cases // 2, args.seed + 2),
        run_config_cases(args.cases // 3, args.seed + 3),
        cli_cases(args.seed + 4),
        checkpoint_cases(args.corruptions, args.seed + 5, work),
        kill_cases(args.kills, args.seed + 6, work),
    ]
    if args.soak_steps:
        sources.append(soak(args.soak_steps, args.seed + 7))
    try:
        for source in sources:
            while True:
                try:
                    name, outcome = next(source)
                except StopIteration:
                    break
                except BaseException:  # noqa: BLE001 - the harness itself failed
                    traceback.print_exc()
                    name, outcome = "harness", "obscure"
                    counts.setdefault(name, Counter())[outcome] += 1
                    break
                key = name if name == "kill/finished-first" else name.split("/")[0]
                counts.setdefault(key, Counter())[outcome] += 1
                if args.verbose and outcome in ("obscure", "wrong"):
                    print(f"  {outcome}: {name}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = Counter()
    for name, c in sorted(counts.items()):
        total.update(c)
        print(f"{name:12s} tried {sum(c.values()):5d}  ok {c['ok']:5d}  clear {c['clear']:5d}  "
              f"obscure {c['obscure']:3d}  wrong {c['wrong']:3d}")  # fmt: skip
    kills = counts.get("kill", Counter())
    print(f"kills resumed with the metrics log intact: {kills['ok']} of {sum(kills.values())}")
    print(
        f"tried {sum(total.values())}, clear errors {total['clear']}, "
        f"obscure crashes {total['obscure']}, silently wrong {total['wrong']} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    return 0 if total["obscure"] == 0 and total["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
