"""The shipped tiny models: checksums verified on load, never pretrained, and capable."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from bystander.checkpointing import sha256_file
from bystander.envs.text_tasks import format_prompt, generate_tasks, heuristic_accuracy
from bystander.envs.text_tokens import byte_tokenizer
from bystander.llm.measures import (
    answer_accuracy,
    complete,
    completion_accuracy,
    template_entropy,
)
from bystander.llm.models import (
    TINY_POLICY,
    TINY_SLM,
    TINY_SLM_HELDOUT,
    TinyConfig,
    load_causal_lm,
    tiny_model,
    tiny_pair,
)
from bystander.llm.shipped import (
    SHIPPED_NAMES,
    ShippedWeightsError,
    load_shipped,
    shipped_dir,
    verify_shipped,
)
from bystander.llm.train_tiny import SHIPPED


def test_manifest_lists_every_shipped_file_with_its_checksum_and_command():
    manifest = json.loads((shipped_dir() / "manifest.json").read_text())
    assert manifest["commands"][0].startswith("python -m bystander.llm.train_tiny --out")
    for name in SHIPPED_NAMES:
        rec = verify_shipped(name)
        assert rec["config"]["seed"] == SHIPPED[name].seed
        assert rec["data_seed"] == 1000 + SHIPPED[name].seed
        for f in ("config.json", "model.safetensors"):
            path = shipped_dir() / name / f
            assert manifest["sha256"][f"{name}/{f}"] == sha256_file(path)
    assert (shipped_dir() / "README.md").read_text().count("`: `") == 2 * len(SHIPPED_NAMES)


def test_package_data_includes_the_weights():
    tomllib = pytest.importorskip("tomllib")
    from fnmatch import fnmatch
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["bystander.llm"]
    files = [
        p.relative_to(root / "llm").as_posix() for p in shipped_dir().rglob("*") if p.is_file()
    ]
    assert files and all(any(fnmatch(f, pat) for pat in patterns) for f in files), files


def test_shipped_configs_load_the_shipped_weights_without_pretraining(tmp_path, monkeypatch):
    import bystander.llm.models as models

    monkeypatch.setattr(models, "pretrain", lambda *a, **k: pytest.fail("pretrained"))
    policy, slm, tok = tiny_pair(TINY_POLICY, TINY_SLM, root=tmp_path)
    assert not (tmp_path / "tiny").exists()  # nothing cached
    assert policy.name_or_path == str(shipped_dir() / "tiny-policy")  # a real path (TRL)
    held, _ = load_causal_lm("tiny-slm-heldout")
    same, _ = tiny_pair(TINY_POLICY, TINY_SLM_HELDOUT, root=tmp_path)[1:]
    assert torch.equal(held.transformer.wte.weight, same.transformer.wte.weight)
    sizes = [sum(p.numel() for p in m.parameters()) for m in (policy, slm, held)]
    assert sizes[0] > sizes[2] > sizes[1]  # the held-out observer differs in size
    assert tok("7", add_special_tokens=False)["input_ids"] == [55 + 3]


def test_a_changed_or_missing_weight_file_is_refused(tmp_path):
    root = tmp_path / "weights"
    shutil.copytree(shipped_dir(), root)
    model, _ = load_shipped("tiny-slm", root=root)  # an intact copy loads
    path = root / "tiny-slm" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ShippedWeightsError, match=r"tiny-slm/model.safetensors.*SHA-256"):
        load_shipped("tiny-slm", root=root)
    (root / "tiny-policy" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing file.*train_tiny"):
        load_shipped("tiny-policy", root=root)
    with pytest.raises(ValueError, match="name: expected one of"):
        load_shipped("tiny-giant", root=root)


def test_measures_on_known_texts():
    tasks = generate_tasks(4, seed=3)
    sols = [dict(t.solutions) for t in tasks]
    texts = [s["steps"] for s in sols] + [s["words"] for s in sols]
    tasks2 = tasks + tasks
    assert answer_accuracy(texts, tasks2) == 1.0
    bits, counts = template_entropy(texts, tasks2)
    assert counts == {"steps": 4, "words": 4} and bits == pytest.approx(1.0)
    assert template_entropy([s["steps"] for s in sols], tasks)[0] == 0.0
    two = [s["steps"] for s in sols for _ in range(2)]  # 2 per task, prompt-major
    assert answer_accuracy(two, tasks) == 1.0
    assert answer_accuracy(["#### -5"] * 4, tasks) == 0.0
    with pytest.raises(ValueError, match="multiple of len"):
        answer_accuracy(texts[:3], tasks)


@pytest.mark.slow
def test_the_shipped_policy_solves_held_out_tasks_above_the_heuristics():
    """Greedy on 200 held-out tasks (the README's figure uses 1000, see the manifest)."""
    policy, tok = load_causal_lm("tiny-policy")
    tasks = generate_tasks(200, seed=10_000)
    texts = complete(policy, tok, [format_prompt(t.question) for t in tasks])
    acc = answer_accuracy(texts, tasks)
    best = heuristic_accuracy(tasks, reference=generate_tasks(5000, seed=1000))["best"]
    assert acc >= 0.5 and acc >= best + 0.15, (acc, best)
    # the held-out observer completes the policy's own chains of thought from half
    slm, slm_tok = load_causal_lm("tiny-slm-heldout")
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts[:64]]
    frac = completion_accuracy(slm, slm_tok, tok, [np.array(i) for i in ids], tasks[:64])
    assert 0.0 < frac <= 1.0


def test_user_configs_still_pretrain_into_the_cache(tmp_path):
    cfg = TinyConfig(n_layer=1, n_embd=16, n_head=2, n_positions=192, steps=2, batch_size=2,
                     num_tasks=10, seed=9)  # fmt: skip
    policy, _, _ = tiny_pair(cfg, cfg, root=tmp_path)
    assert (tmp_path / "tiny").is_dir()
    fresh = tiny_model(cfg, byte_tokenizer())
    assert not torch.equal(policy.transformer.wte.weight, fresh.transformer.wte.weight)
