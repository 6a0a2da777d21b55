"""The text env, its tasks and verifier, the views, and the env through the shared wrappers."""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import bystander.envs  # noqa: F401  (registers the ids)
from bystander.envs.contract import EGO_STEP_KEY
from bystander.envs.text_tasks import (
    ArithmeticVerifier,
    extract_answer,
    format_prompt,
    generate_tasks,
    load_gsm8k_jsonl,
)
from bystander.envs.text_tokens import byte_tokenizer, decode, encode
from bystander.envs.text_v0 import ObserverView, TextEnv, UnicodeText, parse_views, view_masks


class _EgoStepAsDict(gym.Wrapper):
    """check_env compares infos with ``==``; EgoStep holds arrays, so compare its fields."""

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, {**info, EGO_STEP_KEY: dataclasses.asdict(info[EGO_STEP_KEY])}

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        return obs, r, term, trunc, {**info, EGO_STEP_KEY: dataclasses.asdict(info[EGO_STEP_KEY])}


def test_generated_tasks_are_seeded_and_their_solutions_verify():
    a, b = generate_tasks(20, seed=3), generate_tasks(20, seed=3)
    assert a == b
    assert generate_tasks(5, seed=3) == a[:5]
    assert generate_tasks(20, seed=4) != a
    verifier = ArithmeticVerifier()
    for task in a:
        out = verifier(task.solution, task)
        assert out == {"reward": 1.1, "correct": 1.0, "format_ok": 1.0}
        # The worked steps compute the answer: evaluate every "x op y = z." claim.
        for claim in task.solution.split("\n")[0].split(". ")[1:]:
            lhs, rhs = claim.rstrip(".").split(" = ")
            assert eval(lhs) == int(rhs)  # noqa: S307 - generated arithmetic only


def test_extract_answer_strict_soft_and_none():
    assert extract_answer("so 3 + 4 = 7\n#### 7") == ("7", True)
    assert extract_answer("#### 1,234.0 and then 5") == ("1234", True)
    assert extract_answer("the answer is 12 or 13") == ("13", False)
    assert extract_answer("no digits here") == (None, False)
    v = ArithmeticVerifier()
    task = generate_tasks(1)[0]
    assert v(f"it is {task.answer}", task) == {"reward": 1.0, "correct": 1.0, "format_ok": 0.0}
    assert v("#### -1", task)["reward"] == pytest.approx(0.1)
    with pytest.raises(TypeError, match="completion"):
        v(b"bytes", task)


def test_gsm8k_jsonl_loader(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    rows = [
        {
            "question": "Ann has 1,200 pens. How many?",
            "answer": "She has <<1200=1200>>.\n#### 1,200",
        },
        {"question": "2 + 2?", "answer": "2 + 2 = 4\n#### 4"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    tasks = load_gsm8k_jsonl(path)
    assert [t.answer for t in tasks] == ["1200", "4"]
    assert tasks[0].solution.startswith("She has <<1200=1200>>")
    env = TextEnv(str(path), views="full")
    obs, _ = env.reset(options={"task_index": 1})
    assert obs == format_prompt("2 + 2?")
    assert env.step(" 2 + 2 = 4\n#### 4")[4]["correct"]
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_gsm8k_jsonl(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "no mark"}\n')
    with pytest.raises(ValueError, match="####"):
        load_gsm8k_jsonl(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_gsm8k_jsonl(bad)


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped")
def test_env_passes_check_env_and_is_registered():
    check_env(_EgoStepAsDict(TextEnv(num_tasks=8)), skip_render_check=True)
    env = gym.make("bystander/Text-v0", num_tasks=4, views="full")
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info[EGO_STEP_KEY].episode_start and info[EGO_STEP_KEY].states.shape == (0,)


def test_spaces_accept_what_models_write():
    space = UnicodeText(max_length=10)
    assert space.contains("ünï \ufffd×\n")
    assert not space.contains("x" * 11)
    assert not space.contains("\ud800")  # lone surrogate
    assert not space.contains(b"bytes")
    assert space.contains(space.sample())


def test_step_reward_ego_step_and_action_forms():
    env = TextEnv(num_tasks=4, views="prefix:4,mask:0.5,full", max_completion_tokens=64)
    obs, _ = env.reset(seed=1)
    tok = env.tokenizer
    solution = " " + env.task.solution
    _, reward, term, trunc, info = env.step(solution)
    assert (term, trunc) == (True, False)
    assert reward == pytest.approx(1.1) and info["rewards"] == {"task": reward}
    assert info["correct"] and info["format_ok"] and info["answer"] == env.task.answer
    ego = info[EGO_STEP_KEY]
    t = len(encode(tok, solution))
    assert ego.states.shape == (t,) and ego.visible.shape == (3, t)
    assert ego.visible[0].tolist() == [True] * 4 + [False] * (t - 4)
    views = ego.context["observer_views"]
    assert views[0]["scored"].tolist() == [False] * 4 + [True] * (t - 4)
    assert np.array_equal(views[1]["scored"], ego.visible[1])
    assert ego.visible[2].all() and views[2]["scored"].all()
    assert np.array_equal(ego.context["prompt_ids"], encode(tok, obs))
    with pytest.raises(RuntimeError, match="reset"):
        env.step("again")
    # Token ids are kept as given; invalid UTF-8 is decoded with U+FFFD.
    env.reset(seed=1)
    ids = np.array([0xFF + 3, 0xFE + 3, ord("7") + 3])
    info = env.step(ids)[4]
    assert np.array_equal(info[EGO_STEP_KEY].states, ids)
    assert info["completion"] == "\ufffd\ufffd7"
    env.reset(seed=1)
    assert env.step(b"\xff\xfe 7")[4]["completion"] == "\ufffd\ufffd 7"
    with pytest.raises(TypeError, match="action"):
        env.reset(seed=1)
        env.step(3.5)


def test_empty_and_overlong_completions():
    env = TextEnv(num_tasks=2, views="prefix:0.5,full", max_completion_tokens=16)
    env.reset(seed=0)
    _, reward, _, _, info = env.step("")
    assert reward == 0.0 and info["completion_tokens"] == 0
    assert info[EGO_STEP_KEY].visible.shape == (2, 0)
    env.reset(seed=0)
    info = env.step("1" * 100)[4]
    assert info["completion_truncated"] and info["completion_tokens"] == 16
    assert info["completion"] == "1" * 16


def test_view_masks_and_parsing():
    rng = np.random.default_rng(0)
    vis, sc = view_masks(ObserverView("prefix", fraction=0.5), 5, rng)
    assert vis.tolist() == [True, True, True, False, False] and np.array_equal(sc, ~vis)
    vis, sc = view_masks(ObserverView("prefix", k=10), 4, rng)
    assert vis.sum() == 3 and sc.sum() == 1  # clamped so that one token is scored
    vis, sc = view_masks(ObserverView("prefix", k=3), 1, rng)
    assert not vis.any() and sc.all()
    vis, sc = view_masks(ObserverView("mask", p=0.3), 2000, rng)
    assert 0.25 < vis.mean() < 0.35 and np.array_equal(vis, sc)
    vis, sc = view_masks(ObserverView("window", window=4), 6, rng)
    assert vis.all() and sc.all()
    views = parse_views("prefix:0.25,prefix:8,mask:0.7,window:16-noprompt,full")
    assert views[0].fraction == 0.25 and views[1].k == 8 and views[2].p == 0.7
    assert views[3].window == 16 and not views[3].prompt and views[4].prompt
    for bad, match in [
        ("blur", "kind"),
        ("prefix", "prefix"),
        ("mask:1.5", "p"),
        ("window", "window"),
        ("prefix:x", "parse"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_views(bad)


def test_tokens_roundtrip_and_char_spans():
    tok = byte_tokenizer()
    text = "é = 3×4 ✓"
    ids = encode(tok, text)
    assert decode(tok, ids) == text
    from bystander.envs.text_tokens import char_spans

    out, spans = char_spans(tok, ids)
    assert out == text
    assert spans[:2].tolist() == [[0, 1], [0, 1]]  # "é" is two bytes, one character
    assert spans[-3:].tolist() == [[8, 9]] * 3  # "✓" is three bytes


def test_reward_model_and_cost_model_scorers(tmp_path):
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from bystander.llm.scorers import SequenceClassifierScorer

    tok = byte_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=16, n_layer=1, n_head=2,
                     num_labels=1, pad_token_id=tok.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    rm = GPT2ForSequenceClassification(cfg)
    scorer = SequenceClassifierScorer(rm, tok)
    env = TextEnv(num_tasks=2, views="full", scorer=scorer, cost_model=scorer)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(" 7")
    with torch.no_grad():
        ids = torch.as_tensor(encode(tok, env.prompt + " 7"))[None]
        expect = float(rm(input_ids=ids).logits[0, 0])
    assert reward == pytest.approx(expect, abs=1e-5)
    assert info["costs"] == {"cost_model": pytest.approx(expect, abs=1e-5)}
    assert info["cost"] == pytest.approx(expect, abs=1e-5)
    batch = scorer.score_texts(["a", "longer text"])  # padding does not change a score
    assert float(batch[0]) == pytest.approx(float(scorer.score_texts(["a"])[0]), abs=1e-5)
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    loaded = SequenceClassifierScorer(str(tmp_path / "rm"))
    assert loaded(" 7", env.task)["reward"] == pytest.approx(expect, abs=1e-5)
    with pytest.raises(FileNotFoundError, match="nope"):
        SequenceClassifierScorer(str(tmp_path / "nope"))
