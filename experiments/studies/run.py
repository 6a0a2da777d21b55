"""Run one study or all of them with one preset (the studies share the CLI flags).

    python experiments/studies/run.py all --preset smoke --backend serial
    python experiments/studies/run.py frontier lagrangian --preset small --workers 2
    python experiments/studies/run.py all --preset full --backend ray --ray-address auto

Studies: frontier (1), lagrangian (2), cotraining (3), partial_observation (4),
review_gate (5), llm_tradeoff (6), multi_agent (7), route_habits (8). The review
gate and the shaping side of the Lagrangian study read Study 1's results of the same
preset, so ``all`` runs
``frontier`` first. Headline numbers of every study run go to ``<out>/headline.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as sl  # noqa: E402

STUDIES = ("frontier", "lagrangian", "cotraining", "partial_observation", "review_gate",
           "llm_tradeoff", "multi_agent", "route_habits")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    p = sl.build_parser("selected")
    p.add_argument("studies", nargs="+", help=f"'all' or any of {', '.join(STUDIES)}")
    args = p.parse_args(argv)
    names = list(STUDIES) if args.studies == ["all"] else args.studies
    for n in names:
        if n not in STUDIES:
            p.error(f"unknown study {n!r}; expected one of {STUDIES}")
    preset = sl.load_preset(args.preset)
    headlines = {}
    for n in names:
        module = importlib.import_module(n)
        headlines[n] = sl.run_study(module, preset, backend=args.backend, workers=args.workers,
                                    ray_address=args.ray_address, out=args.out,
                                    rerun=args.rerun, max_trials=args.max_trials,
                                    report_only=args.report_only)  # fmt: skip
    root = Path(args.out) if args.out is not None else sl.DEFAULT_OUT / str(preset["name"])
    path = root / "headline.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    sl.atomic_write_json(path, {**old, **headlines})
    print(json.dumps(headlines, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
