"""Run the whole benchmark suite (issues 6 and 15) and print one Markdown report.

Sections (each a table whose ratios are measured side by side in this run):

0. the steady state, resets included: simulator core and training env at N = 1024 on
   1 and 2 threads, the native Gymnasium vector env at N = 64 and 1024, the single env,
   side by side with EnvPool's ``Intersection-v0`` and highway-env's ``intersection-v0``
   when installed (``pip install -e .[bench]``), in steps/s and simulated seconds per
   second: ``steady_state.py`` (issue 15's table);
1. single env steps/s vs highway-env ``intersection-v0`` (when installed;
   ``pip install --no-deps highway-env``), via ``env_speed.py``;
2. batched env world-steps/s at N = 1, 16, 64, 256, 1024, bare and with the
   predictability wrapper (constant velocity, learned predictor): ``batched_env.py``;
3. SB3 PPO training steps/s on the batched env vs CartPole-v1, same hyperparameters:
   ``ppo_speed.py`` (sections 1-2 time short runs from a reset: section 0 is the
   sustained figure);
4. cost vs number of road users / observers (10, 50, 200): ``scaling.py``;
5. the full ``bystander train`` path (Lagrangian constraint, callbacks) vs CartPole-v1
   through the same trainer: ``train_speed.py`` (issue 4's target).

Usage::

    python experiments/benchmarks/run_all.py [--quick] [--out results.md] [--readme README.md]

``--quick`` shrinks every measurement (a smoke run in about a minute on an idle core;
figures are noisier). ``--out`` writes the report; ``--readme`` replaces the section
between ``<!-- benchmarks:start -->`` and ``<!-- benchmarks:end -->`` of that file (or
appends it) with the report and the command that produced it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
import time

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gymnasium as gym  # noqa: E402
import numba  # noqa: E402
import torch  # noqa: E402

import bystander.envs  # noqa: E402, F401 - registers the env ids

START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"


def single_env_section(seconds: float) -> str:
    """Single-env steps/s of ours vs highway-env, with ``env_speed.steps_per_second``."""
    from env_speed import steps_per_second

    ours, n_ours = steps_per_second(gym.make("bystander/Intersection-v0"), seconds)
    lines = [
        "### Single env vs highway-env (random policy, resets included)",
        "",
        "| env | steps/s | steps timed | ratio |",
        "|---|---|---|---|",
    ]
    try:
        import highway_env  # noqa: F401
    except ImportError:
        lines.append(f"| bystander/Intersection-v0 | {ours:,.0f} | {n_ours} | - |")
        lines += ["", "highway-env not installed (`pip install --no-deps highway-env`)."]
        return "\n".join(lines)
    theirs, n_theirs = steps_per_second(gym.make("intersection-v0"), seconds)
    ratio = ours / theirs
    lines += [
        f"| bystander/Intersection-v0 | {ours:,.0f} | {n_ours} | {ratio:.1f}x |",
        f"| highway-env intersection-v0 | {theirs:,.1f} | {n_theirs} | 1.0x |",
        "",
        f"Target >= 100x: {'met' if ratio >= 100 else 'MISSED'} ({ratio:.1f}x).",
    ]
    return "\n".join(lines)


def run(quick: bool) -> str:
    import batched_env
    import ppo_speed
    import scaling
    import steady_state
    import train_speed

    torch.set_num_threads(1)
    sections = []
    load0 = _load()
    t0 = time.perf_counter()
    sections.append(steady_state.main(["--quick"] if quick else []))
    numba.set_num_threads(1)  # the sections below are the one-core figures of issue 6
    sections.append(single_env_section(3.0 if quick else 10.0))
    if quick:
        sections.append(
            batched_env.main(["--worlds", "1", "64", "1024", "--steps", "3", "--repeats", "1"])
        )
        sections.append(
            ppo_speed.main(
                ["--steps", "2048", "--rounds", "1", "--n-envs", "8", "--n-steps", "128"]
            )
        )
        sections.append(scaling.main(["--worlds", "8", "--steps", "3", "--repeats", "1"]))
        sections.append(train_speed.main(["--steps", "4096", "--rounds", "1"]))
    else:
        sections.append(batched_env.main([]))
        sections.append(ppo_speed.main([]))
        sections.append(scaling.main([]))
        sections.append(train_speed.main([]))
    took = time.perf_counter() - t0
    head = (
        f"Benchmarks of {datetime.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, torch {torch.__version__} (1 thread), "
        f"numba {numba.__version__}, load average {load0} at the start, {_load()} at the end, "
        f"{os.cpu_count()} CPUs visible (shared), {took:.0f} s. Command: "
        f"`python experiments/benchmarks/run_all.py{' --quick' if quick else ''}`"
    )
    return head + "\n\n" + "\n\n".join(sections) + "\n"


def _load() -> str:
    """The 1-minute load average (``os.getloadavg``), or ``n/a``."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def update_readme(path: str, report: str) -> None:
    """Put ``report`` between the benchmark markers of ``path`` (appended if absent)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    block = f"{START}\n{report}{END}"
    if START in text and END in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n## Benchmarks\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="short smoke run (noisier figures)")
    ap.add_argument("--out", default=None, help="write the Markdown report to this file")
    ap.add_argument("--readme", default=None, help="update this file's benchmark section")
    args = ap.parse_args(argv)
    report = run(args.quick)
    print("\n" + report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(report)
    if args.readme:
        update_readme(args.readme, report)


if __name__ == "__main__":
    main()
