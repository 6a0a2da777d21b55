"""SLM observers: small causal LMs that read part of a chain of thought.

:class:`SLMPredictor` is a :class:`bystander.envs.contract.Predictor` with
``horizon=None`` (scored once per episode on the whole completion), ``unit =
"nats/token"`` and token-id states ``(T,)``. Its error for one view is the negative
mean log-probability per token of what the policy wrote, given the observer's
partial view; the views (``prefix``, ``mask``, ``window``, no prompt) and the exact
semantics are defined in :mod:`bystander.envs.text_v0` (``visible`` = tokens read,
``context["observer_views"][id]["scored"]`` = tokens scored). Without that context
entry a view is scored as ``full`` (every token, teacher-forced).

Batched: one forward pass scores every view of a group (views with a ``window`` take
a second pass over short rows). When the SLM's tokenizer differs from the policy's,
the completion is decoded to text and re-encoded with the SLM's tokenizer; an SLM
token is *read* if every policy token overlapping its characters was read, and
*scored* if any was scored; the error is then nats per SLM token.

Contexts longer than the SLM's context length: the prompt is cut from the left
first; if the completion alone does not fit, tokens are scored with a sliding
window of the context length (documented, never an error deep in torch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from bystander.envs.contract import Views
from bystander.envs.scoring import PredictorTable
from bystander.envs.text_tokens import char_spans, decode, encode_with_offsets, same_tokenizer
from bystander.envs.text_v0 import ObserverView, view_masks
from bystander.llm.models import max_context

__all__ = ["SLMPredictor", "build_views", "score_observers"]


class _Row:
    """One scoring row: SLM input ids, targets and which targets count."""

    __slots__ = ("inputs", "targets", "scored", "view", "n_prompt")

    def __init__(
        self, inputs: np.ndarray, targets: np.ndarray, scored: np.ndarray, view: int, n_prompt: int
    ) -> None:
        self.inputs, self.targets, self.scored = inputs, targets, scored
        self.view, self.n_prompt = view, n_prompt


class SLMPredictor:
    """An ``AutoModelForCausalLM`` observer of the policy's completions.

    Args:
        model: The SLM (any causal LM returning ``.logits``).
        tokenizer: The SLM's tokenizer.
        policy_tokenizer: The tokenizer of the token ids in views (default: the
            SLM's). If it differs, text is retokenised (a fast SLM tokenizer or a
            byte tokenizer is needed for offsets).
        lr: Learning rate of the co-training optimiser (:meth:`update`).
        max_rows: Rows per forward pass (bounds memory).
    """

    horizon: int | None = None
    history: int | None = None
    unit: str = "nats/token"

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        policy_tokenizer: Any | None = None,
        lr: float = 1e-4,
        max_rows: int = 256,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.policy_tokenizer = policy_tokenizer if policy_tokenizer is not None else tokenizer
        self.retokenise = not same_tokenizer(self.tokenizer, self.policy_tokenizer)
        self.lr = float(lr)
        self.max_rows = int(max_rows)
        self.context_length = max_context(model)
        self.optimizer: torch.optim.Optimizer | None = None
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else None
        self.bos_id = int(bos if bos is not None else tokenizer.eos_token_id)
        unk = tokenizer.unk_token_id
        self.placeholder_id = int(unk if unk is not None else tokenizer.pad_token_id)
        self.pad_id = int(
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.bos_id
        )

    # ------------------------------------------------------------------ rows
    def _view_rows(self, views: Views, truth: np.ndarray | None) -> list[tuple[_Row, int | None]]:
        n = len(views)
        states = np.asarray(views.states if truth is None else truth)
        if states.ndim == 1:
            states = np.broadcast_to(states, (n, states.shape[0]))
        if states.shape[0] != n:
            raise ValueError(f"truth: expected shape (T,) or ({n}, T), got {states.shape}")
        if states.size and not np.issubdtype(states.dtype, np.integer):
            raise TypeError(f"truth: expected integer token ids, got dtype {states.dtype}")
        mask = np.asarray(views.mask, dtype=bool)
        if mask.shape != states.shape:
            raise ValueError(f"views.mask: expected shape {states.shape}, got {mask.shape}")
        contexts = views.context or [{}] * n
        rows = []
        for b in range(n):
            ctx: Mapping[str, Any] = contexts[b] or {}
            spec = (ctx.get("observer_views") or {}).get(int(views.observer_ids[b]))
            ids = states[b].astype(np.int64)
            visible = mask[b]
            scored = np.ones_like(visible) if spec is None else np.asarray(spec["scored"], bool)
            if scored.shape != visible.shape:
                raise ValueError(
                    f"context['observer_views'][{int(views.observer_ids[b])}]['scored']: expected "
                    f"shape {visible.shape}, got {scored.shape}"
                )
            # Trailing tokens neither read nor scored (e.g. padding) cannot matter to a
            # causal observer: drop them.
            used = np.nonzero(visible | scored)[0]
            end = int(used[-1]) + 1 if len(used) else 0
            ids, visible, scored = ids[:end], visible[:end], scored[:end]
            use_prompt = True if spec is None else bool(spec.get("prompt", True))
            window = None if spec is None else spec.get("window")
            prompt_ids = np.asarray(ctx.get("prompt_ids", np.zeros(0)), dtype=np.int64)
            prompt_text = ctx.get("prompt")
            rows.append(
                (self._row(ids, visible, scored, prompt_ids, prompt_text, use_prompt, b), window)
            )
        return rows

    def _row(
        self,
        ids: np.ndarray,
        visible: np.ndarray,
        scored: np.ndarray,
        prompt_ids: np.ndarray,
        prompt_text: str | None,
        use_prompt: bool,
        b: int,
    ) -> _Row:
        if self.retokenise:
            text, spans = char_spans(self.policy_tokenizer, ids)
            slm_ids, offsets = encode_with_offsets(self.tokenizer, text)
            vis = np.ones(len(slm_ids), dtype=bool)
            sc = np.zeros(len(slm_ids), dtype=bool)
            for j, (a, e) in enumerate(offsets):
                over = (spans[:, 0] < max(e, a + 1)) & (spans[:, 1] > a)
                if over.any():
                    vis[j] = bool(visible[over].all())
                    sc[j] = bool(scored[over].any())
            ids, visible, scored = slm_ids, vis, sc
            if use_prompt:
                if prompt_text is None:
                    prompt_text = decode(self.policy_tokenizer, prompt_ids)
                prompt_ids = encode_with_offsets(self.tokenizer, prompt_text)[0]
        if not use_prompt:
            prompt_ids = np.zeros(0, dtype=np.int64)
        shown = np.where(visible | scored, ids, self.placeholder_id)
        inputs = np.concatenate([[self.bos_id], prompt_ids, shown]).astype(np.int64)
        # Targets are aligned with inputs[1:]: only completion positions can count.
        targets = np.concatenate([prompt_ids, ids]).astype(np.int64)
        counted = np.concatenate([np.zeros(len(prompt_ids), bool), scored])
        return _Row(inputs, targets, counted, b, len(prompt_ids))

    # --------------------------------------------------------------- forward
    def _nll(self, rows: Sequence[tuple[_Row, int | None]], grad: bool) -> list[torch.Tensor]:
        """Per-row NLL of the counted targets (1-D tensors), in the order of ``rows``."""
        ctx = self.context_length
        full, windowed = [], []
        for i, (row, window) in enumerate(rows):
            n_inputs = len(row.inputs)
            if window is None and n_inputs > ctx:
                # Cut the prompt from the left; if the completion alone does not fit,
                # score it with a sliding window of the context length.
                cut = min(n_inputs - ctx, row.n_prompt)
                if cut:
                    row = _Row(
                        np.concatenate([row.inputs[:1], row.inputs[1 + cut :]]),
                        row.targets[cut:],
                        row.scored[cut:],
                        row.view,
                        row.n_prompt - cut,
                    )
                if len(row.inputs) > ctx:
                    window = ctx - 1
            (windowed if window is not None else full).append((i, row, window))
        out: list[torch.Tensor | None] = [None] * len(rows)
        device = next(self.model.parameters()).device
        # Views that read the same tokens (e.g. prefix and full on one completion)
        # share one row of the forward pass; longest first to limit padding.
        unique: dict[bytes, list[tuple[int, _Row]]] = {}
        for i, r, _ in full:
            unique.setdefault(r.inputs.tobytes() + b"|" + r.targets.tobytes(), []).append((i, r))
        groups = sorted(unique.values(), key=lambda g: -len(g[0][1].inputs))
        for chunk in _chunks(groups, self.max_rows):
            n = len(chunk[0][0][1].inputs) - 1
            x = torch.full((len(chunk), n), self.pad_id, dtype=torch.long)
            y = torch.zeros((len(chunk), n), dtype=torch.long)
            att = torch.zeros((len(chunk), n), dtype=torch.long)
            for j, group in enumerate(chunk):
                r = group[0][1]
                L = len(r.inputs) - 1
                x[j, :L] = torch.as_tensor(r.inputs[:-1])
                att[j, :L] = 1
                y[j, :L] = torch.as_tensor(r.targets)
            nll = self._forward(x, att, y, device, grad)
            for j, group in enumerate(chunk):
                for i, r in group:
                    counted = torch.as_tensor(r.scored, device=device)
                    out[i] = nll[j, : len(r.scored)][counted]
        if windowed:
            self._nll_windowed(windowed, out, device, grad)
        return [o if o is not None else torch.zeros(0) for o in out]

    def _nll_windowed(self, items: list, out: list, device: torch.device, grad: bool) -> None:
        """Each counted target predicted from the last ``window`` inputs before it."""
        pieces = []  # (row index, inputs window, target)
        for i, r, w in items:
            w = min(int(w), self.context_length - 1)
            for t in np.nonzero(r.scored)[0]:
                # Target t sits at inputs[t + 1]; its context is inputs[:t + 1].
                lo = max(0, t + 1 - w)
                pieces.append((i, r.inputs[lo : t + 1], r.targets[t]))
        per_row: dict[int, list[torch.Tensor]] = {i: [] for i, _, _ in items}
        for chunk in _chunks(pieces, self.max_rows * 8):
            n = max(len(p[1]) for p in chunk)
            x = torch.full((len(chunk), n), self.pad_id, dtype=torch.long)
            att = torch.zeros((len(chunk), n), dtype=torch.long)
            last = torch.zeros(len(chunk), dtype=torch.long)
            for j, (_, ctx, _) in enumerate(chunk):
                x[j, : len(ctx)] = torch.as_tensor(ctx)
                att[j, : len(ctx)] = 1
                last[j] = len(ctx) - 1
            y = torch.as_tensor([p[2] for p in chunk], dtype=torch.long)
            with torch.set_grad_enabled(grad):
                logits = self.model(input_ids=x.to(device), attention_mask=att.to(device)).logits
                logits = logits[torch.arange(len(chunk), device=device), last.to(device)].float()
                nll = -torch.log_softmax(logits, -1).gather(-1, y.to(device)[:, None])[:, 0]
            for j, (i, _, _) in enumerate(chunk):
                per_row[i].append(nll[j : j + 1])
        for i, parts in per_row.items():
            out[i] = torch.cat(parts) if parts else torch.zeros(0, device=device)

    def _forward(
        self, x: torch.Tensor, att: torch.Tensor, y: torch.Tensor, device: torch.device, grad: bool
    ) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            logits = self.model(input_ids=x.to(device), attention_mask=att.to(device)).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            return -logp.gather(-1, y.to(device)[..., None])[..., 0]

    # ------------------------------------------------------------- protocol
    def token_nll(self, views: Views, truth: np.ndarray | None = None) -> list[np.ndarray]:
        """Per-view NLL (nats) of each scored token, SLM token order; ``truth`` ``(T,)``/``(B, T)``."""
        rows = self._view_rows(views, truth)
        was_training = self.model.training
        self.model.eval()
        try:
            nll = self._nll(rows, grad=False)
        finally:
            self.model.train(was_training)
        return [t.detach().cpu().numpy().astype(np.float64) for t in nll]

    def score(self, views: Views, truth: np.ndarray) -> np.ndarray:
        """Mean NLL per scored token, shape ``(B,)`` nats/token; 0.0 for a view that scores nothing."""
        return np.array([float(t.mean()) if t.size else 0.0 for t in self.token_nll(views, truth)])

    def predict(self, views: Views) -> np.ndarray:
        """The SLM's most likely token at each completion position, ``(B, T)`` int64.

        Ids are in the SLM's vocabulary (the policy's when the tokenizers match);
        ``-1`` where the view scores nothing. Useful for inspection: the error needs
        the whole distribution, so :meth:`error` recomputes it.
        """
        rows = self._view_rows(views, None)
        t_max = max([len(r.targets) - r.n_prompt for r, _ in rows] + [np.shape(views.states)[-1]])
        out = np.full((len(views), t_max), -1, dtype=np.int64)
        device = next(self.model.parameters()).device
        with torch.no_grad():
            for b, (row, _) in enumerate(rows):
                x = torch.as_tensor(row.inputs[:-1][-self.context_length :])[None].to(device)
                best = self.model(input_ids=x).logits[0].argmax(-1).cpu().numpy()
                t = len(row.targets) - row.n_prompt
                guess = best[len(best) - t :] if t else best[:0]
                keep = row.scored[row.n_prompt :]
                out[b, :t][keep] = guess[keep]
        return out

    def error(self, predictions: np.ndarray, truth: np.ndarray, views: Views) -> np.ndarray:
        """Nats/token of ``truth`` under the SLM, ``(B,)``; ``predictions`` are not needed."""
        return self.score(views, truth)

    def update(self, views: Views, truth: np.ndarray) -> dict[str, float]:
        """One co-training step (NLL of the scored tokens): the GAN-like variant."""
        rows = self._view_rows(views, truth)
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr)
        self.model.train()
        nll = [t for t in self._nll(rows, grad=True) if t.numel()]
        self.model.eval()
        if not nll:
            return {}
        loss = torch.cat(nll).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return {"slm_nll": float(loss.detach())}

    def state_dict(self) -> dict[str, Any]:
        """Model and co-training optimiser state (for checkpoints)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if state.get("optimizer") is not None:
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr)
            self.optimizer.load_state_dict(state["optimizer"])


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def build_views(
    views: Sequence[ObserverView],
    completions: Sequence[np.ndarray],
    prompt_ids: Sequence[np.ndarray],
    prompts: Sequence[str],
    rng: np.random.Generator,
) -> tuple[Views, np.ndarray]:
    """The :class:`Views` of ``M`` observers on ``N`` completions (the env's semantics).

    Completions are right-padded with 0 to the longest; padding is neither read nor
    scored. Row ``n * M + m`` is observer ``m`` on completion ``n``.

    Returns:
        ``(views, truth)``: ``B = N * M`` views and the ``(B, T_max)`` token ids.
    """
    m = len(views)
    t_max = max([len(c) for c in completions] + [0])
    states = np.zeros((len(completions) * m, t_max), dtype=np.int64)
    mask = np.zeros_like(states, dtype=bool)
    contexts = []

    for n, (c, p_ids, prompt) in enumerate(zip(completions, prompt_ids, prompts, strict=True)):
        t = len(c)
        specs = {}
        for j, view in enumerate(views):
            visible, scored = view_masks(view, t, rng)
            row = n * m + j
            states[row, :t] = c
            mask[row, :t] = visible
            full = np.zeros(t_max, dtype=bool)
            full[:t] = scored
            specs[j] = {"scored": full, **asdict(view)}
        ctx = {"prompt": prompt, "prompt_ids": np.asarray(p_ids), "observer_views": specs}
        contexts.extend([ctx] * m)
    out = Views(
        states=states,
        mask=mask,
        observer_types=np.array([v.type for v in views] * len(completions), dtype=object),
        observer_ids=np.tile(np.arange(m, dtype=np.int64), len(completions)),
        context=contexts,
    )
    return out, states


def score_observers(
    predictors: Any | Mapping[str, Any],
    views: Sequence[ObserverView],
    completions: Sequence[np.ndarray],
    prompt_ids: Sequence[np.ndarray],
    prompts: Sequence[str],
    rng: np.random.Generator,
) -> np.ndarray:
    """Error of each observer on each completion, ``(N, M)`` nats/token (batched).

    ``predictors``: one predictor for every observer, or a dict observer type ->
    predictor (``"*"`` = default; no entry or None: not scored), as the shared wrapper
    takes (:class:`~bystander.envs.scoring.PredictorTable`). One ``score`` call per
    distinct predictor. Entries whose view reads or scores nothing are NaN, and so are
    the entries of observers that no predictor scores.
    """
    batch, truth = build_views(views, completions, prompt_ids, prompts, rng)
    m = len(views)
    errors = np.full(len(batch), np.nan)
    for pred, rows in PredictorTable(predictors).groups(batch.observer_types):
        sub = Views(
            states=batch.states[rows],
            mask=batch.mask[rows],
            observer_types=batch.observer_types[rows],
            observer_ids=batch.observer_ids[rows],
            context=[batch.context[r] for r in rows],
        )
        errors[rows] = pred.score(sub, truth[rows])
    seen = batch.mask.any(axis=1)
    scored = np.array(
        [
            ctx["observer_views"][int(o)]["scored"].any()
            for ctx, o in zip(batch.context, batch.observer_ids, strict=True)
        ]
    )
    errors[~(seen & scored)] = np.nan
    return errors.reshape(len(completions), m)
