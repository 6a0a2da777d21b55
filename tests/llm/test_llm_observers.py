"""SLM observers: log-prob scoring by hand, views, retokenisation, combining, the shared wrappers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bystander.envs.contract import Predictor, Views
from bystander.envs.scoring import combine_errors
from bystander.envs.text_tokens import byte_tokenizer, char_spans, encode, encode_with_offsets
from bystander.envs.text_v0 import ObserverView, TextEnv, parse_views
from bystander.llm.models import TinyConfig, tiny_model
from bystander.llm.observers import SLMPredictor, build_views, score_observers
from bystander.llm.reviewer import SLMReviewer


class Bigram(torch.nn.Module):
    """A causal LM whose next-token logits depend on the previous token only: hand-checkable."""

    def __init__(self, vocab: int, seed: int = 0, n_positions: int = 512) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=g))
        self.config = SimpleNamespace(n_positions=n_positions)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])

    def logp(self, prev: int, nxt: int) -> float:
        return float(torch.log_softmax(self.table[prev].detach().double(), -1)[nxt])


def word_tokenizer():
    """A BPE tokenizer trained on generated text: genuinely different from ByT5 (no downloads)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from bystander.envs.text_tasks import generate_tasks
    from bystander.llm.models import pretraining_texts

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["[PAD]", "[EOS]", "[UNK]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(pretraining_texts(generate_tasks(200, seed=7)), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]"
    )


def one_view(ids, visible, scored, prompt_ids, prompt="", window=None, use_prompt=True):
    ids = np.asarray(ids, dtype=np.int64)
    spec = {"scored": np.asarray(scored, bool), "window": window, "prompt": use_prompt}
    return Views(
        states=ids[None],
        mask=np.asarray(visible, bool)[None],
        observer_types=np.array(["slm"], dtype=object),
        observer_ids=np.array([7]),
        context=[
            {"prompt_ids": np.asarray(prompt_ids), "prompt": prompt, "observer_views": {7: spec}}
        ],
    )


@pytest.fixture(scope="module")
def byt5():
    return byte_tokenizer()


def test_predictor_protocol_and_units(byt5):
    pred = SLMPredictor(Bigram(len(byt5)), byt5)
    assert isinstance(pred, Predictor)
    assert pred.horizon is None and pred.history is None and pred.unit == "nats/token"


def test_logprob_scoring_matches_hand_computation(byt5):
    model = Bigram(len(byt5), seed=1)
    pred = SLMPredictor(model, byt5)
    bos, unk = byt5.eos_token_id, byt5.unk_token_id
    prompt = [10, 11]
    x = [20, 21, 22, 23, 24]
    # Full view: every token, teacher-forced, after BOS + prompt.
    full = one_view(x, [1] * 5, [1] * 5, prompt)
    prev = [11, 20, 21, 22, 23]
    expect = -np.mean([model.logp(p, t) for p, t in zip(prev, x, strict=True)])
    assert pred.score(full, np.asarray(x)[None])[0] == pytest.approx(expect, abs=1e-5)
    # Prefix view (k = 2): tokens 2.. scored given the true history.
    pre = one_view(x, [1, 1, 0, 0, 0], [0, 0, 1, 1, 1], prompt)
    expect = -np.mean([model.logp(21, 22), model.logp(22, 23), model.logp(23, 24)])
    assert pred.score(pre, np.asarray(x))[0] == pytest.approx(expect, abs=1e-5)
    # Mask view: read = scored = {0, 2, 4}; unread tokens are placeholders in the context.
    keep = [1, 0, 1, 0, 1]
    msk = one_view(x, keep, keep, prompt)
    expect = -np.mean([model.logp(11, 20), model.logp(unk, 22), model.logp(unk, 24)])
    assert pred.score(msk, np.asarray(x))[0] == pytest.approx(expect, abs=1e-5)
    nll = pred.token_nll(msk, np.asarray(x))[0]
    assert nll.shape == (3,)
    # No prompt: the first token follows BOS.
    nop = one_view(x, [1] * 5, [1] * 5, prompt, use_prompt=False)
    expect = -np.mean([model.logp(p, t) for p, t in zip([bos] + x[:-1], x, strict=True)])
    assert pred.score(nop, np.asarray(x))[0] == pytest.approx(expect, abs=1e-5)
    # A view that scores nothing is 0.0 (the wrappers never ask for it).
    assert pred.score(one_view(x, [1] * 5, [0] * 5, prompt), np.asarray(x))[0] == 0.0


def test_window_view_and_long_contexts_match_explicit_forward(byt5):
    model = tiny_model(TinyConfig(n_layer=1, n_embd=16, n_head=2, n_positions=32), byt5).eval()
    pred = SLMPredictor(model, byt5)
    prompt = encode(byt5, "Q: 1?\nA:")
    x = encode(byt5, " 1 + 1 = 2")
    seq = np.concatenate([[byt5.eos_token_id], prompt, x])

    def nll_at(ctx, target):
        with torch.no_grad():
            logits = model(input_ids=torch.as_tensor(ctx)[None]).logits[0, -1]
        return -float(torch.log_softmax(logits.double(), -1)[target])

    w = 3
    v = one_view(x, [1] * len(x), [1] * len(x), prompt, window=w)
    p0 = 1 + len(prompt)
    expect = np.mean([nll_at(seq[max(0, p0 + t - w) : p0 + t], x[t]) for t in range(len(x))])
    assert pred.score(v, x)[0] == pytest.approx(expect, abs=1e-4)
    # Longer than the 32-token context: the prompt is cut from the left...
    long_prompt = encode(byt5, "Q: " + "9" * 40 + "?\nA:")
    v = one_view(x, [1] * len(x), [1] * len(x), long_prompt)
    kept = np.concatenate([[byt5.eos_token_id], long_prompt[-(32 - 1 - len(x)) :], x])
    expect = np.mean([nll_at(kept[: len(kept) - len(x) + t], x[t]) for t in range(len(x))])
    assert pred.score(v, x)[0] == pytest.approx(expect, abs=1e-4)
    # ...and a completion longer than the context is scored with a sliding window.
    y = encode(byt5, "1 + 1 = 2. " * 5)
    v = one_view(y, [1] * len(y), [1] * len(y), prompt)
    out = pred.score(v, y)
    assert np.isfinite(out).all() and out[0] > 0


def test_retokenisation_across_two_tokenizers(byt5):
    bpe = word_tokenizer()
    assert len(bpe) != len(byt5)
    slm = Bigram(len(bpe), seed=2)
    pred = SLMPredictor(slm, bpe, policy_tokenizer=byt5)
    assert pred.retokenise
    prompt = "Q: Ada has 3 apples.\nA:"
    text = " Ada starts with 3 apples. 3 + 4 = 7.\n#### 7"
    x = encode(byt5, text)
    p_ids = encode(byt5, prompt)
    slm_prompt = bpe(prompt, add_special_tokens=False)["input_ids"]
    slm_x, offsets = encode_with_offsets(bpe, text)
    assert len(slm_x) < len(x)
    ctx = [bpe.eos_token_id, *slm_prompt, *slm_x]
    base = 1 + len(slm_prompt)

    def expect(scored_tokens):
        return -np.mean([slm.logp(ctx[base + j - 1], slm_x[j]) for j in scored_tokens])

    full = one_view(x, [1] * len(x), [1] * len(x), p_ids, prompt)
    assert pred.score(full, x)[0] == pytest.approx(expect(range(len(slm_x))), abs=1e-5)
    # Prefix of k bytes: SLM tokens overlapping any byte >= k are scored.
    k = text.index(" 3 +")
    vis = np.arange(len(x)) < k
    pre = one_view(x, vis, ~vis, p_ids, prompt)
    scored = [j for j, (a, b) in enumerate(offsets) if b > k]
    assert 0 < len(scored) < len(slm_x)
    assert pred.score(pre, x)[0] == pytest.approx(expect(scored), abs=1e-5)
    # The other direction: a BPE policy and a byte-level observer.
    back = Bigram(len(byt5), seed=3)
    pred2 = SLMPredictor(back, byt5, policy_tokenizer=bpe)
    bpe_ids = np.asarray(slm_x)
    t2, spans = char_spans(bpe, bpe_ids)
    assert t2 == text and spans[-1, 1] == len(text)
    v = one_view(bpe_ids, [1] * len(bpe_ids), [1] * len(bpe_ids), slm_prompt, prompt)
    b_ctx = [byt5.eos_token_id, *p_ids, *x]
    b0 = 1 + len(p_ids)
    want = -np.mean([back.logp(b_ctx[b0 + j - 1], x[j]) for j in range(len(x))])
    assert pred2.score(v, bpe_ids)[0] == pytest.approx(want, abs=1e-5)


def test_batched_group_scoring_equals_one_by_one(byt5):
    model = tiny_model(TinyConfig(n_layer=1, n_embd=16, n_head=2, n_positions=128), byt5).eval()
    pred = SLMPredictor(model, byt5)
    views = parse_views("prefix:0.5,mask:0.6,full,window:5-noprompt")
    prompt = "Q: 2 + 2?\nA:"
    comps = [encode(byt5, s) for s in [" 4\n#### 4", " 2 + 2 = 4.\n#### 4", "", "x"]]
    p_ids = [encode(byt5, prompt)] * len(comps)
    batch = score_observers(pred, views, comps, p_ids, [prompt] * 4, np.random.default_rng(5))
    assert batch.shape == (4, 4)
    assert np.isnan(batch[2]).all()  # empty completion: nobody read anything
    assert np.isnan(batch[3, 0]) and np.isfinite(batch[3, 2])  # 1 token: prefix reads nothing
    rng = np.random.default_rng(5)
    for n, c in enumerate(comps):
        single = score_observers(pred, views, [c], [p_ids[n]], [prompt], rng)
        np.testing.assert_allclose(single[0], batch[n], rtol=1e-5, atol=1e-6)
    cost = combine_errors(batch, "mean")
    worst = combine_errors(batch, "worst")
    assert cost[2] == 0.0 and worst[2] == 0.0
    assert cost[1] == pytest.approx(np.nanmean(batch[1])) and worst[1] == np.nanmax(batch[1])
    with pytest.raises(ValueError, match="combine"):
        combine_errors(batch, "median")


def test_co_training_lowers_the_observers_nll(byt5):
    torch.manual_seed(0)
    model = tiny_model(TinyConfig(n_layer=1, n_embd=16, n_head=2, n_positions=64), byt5)
    pred = SLMPredictor(model, byt5, lr=1e-2)
    x = encode(byt5, " 3 + 4 = 7.\n#### 7")
    views, truth = build_views(
        [ObserverView("full")], [x], [encode(byt5, "Q:")], ["Q:"], np.random.default_rng(0)
    )
    before = pred.score(views, truth)[0]
    for _ in range(15):
        out = pred.update(views, truth)
    assert set(out) == {"slm_nll"}
    assert pred.score(views, truth)[0] < before - 0.5
    assert pred.predict(views).shape == (1, len(x))


def test_text_env_through_shared_wrappers_and_review_gate(byt5):
    pytest.importorskip("bystander.envs.predictability")
    from bystander.envs.constraints import LagrangeMultiplier, LagrangianReward
    from bystander.envs.predictability import PredictabilityReward
    from bystander.envs.review import ReviewGate

    model = tiny_model(TinyConfig(n_layer=1, n_embd=16, n_head=2, n_positions=256), byt5).eval()
    pred = SLMPredictor(model, byt5)
    env = TextEnv(num_tasks=4, views="prefix:0.5,mask:0.7,full")
    wrapped = LagrangianReward(PredictabilityReward(env, pred), LagrangeMultiplier(budget=1.0))
    wrapped.reset(seed=0)
    _, reward, term, _, info = wrapped.step(" 1 + 2 = 3.\n#### 3")
    assert term
    assert np.isfinite(info["predictability"]) and info["predictability"] < 0
    assert info["observers_scored"] == 3
    assert info["costs"]["predictability"] == pytest.approx(-info["predictability"])
    assert set(info["prediction_error_by_type"]) == {"slm"}
    assert info["episode_cost"] == pytest.approx(info["cost"])
    assert reward == pytest.approx((info["rewards"]["task"] - info["cost"]) / 2.0)
    # An empty completion: nobody saw anything, nothing scored, nothing earned.
    wrapped.reset(seed=0)
    info = wrapped.step("")[4]
    assert info["observers_scored"] == 0 and info["predictability"] == 0.0
    # The SLM panel as a decision-time reviewer.
    reviewer = SLMReviewer(pred, "full")
    gate = ReviewGate(
        TextEnv(num_tasks=4, views="full"), reviewer, threshold=0.0, fallback="#### 0"
    )
    gate.reset(seed=0)
    info = gate.step(" 1 + 2 = 3")[4]
    assert info["escalated"] and info["review_cost"] > 0 and gate.escalations == 1
    assert info["completion"] == "#### 0"
