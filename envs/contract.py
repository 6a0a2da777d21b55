"""The shared predictability contract between environments, predictors and wrappers.

Both domains (driving and text) speak this contract; nothing in it knows about cars
or tokens. See ``docs/DESIGN.md`` ("The shared contract").

Vocabulary
----------
*Ego state*: one element of the ego's trajectory. Driving: a position ``(x, y)`` in
metres, world frame (``D = 2``). Text: one token id (states are ``int64`` of shape
``(T,)``, i.e. no feature dimension).

*Observer*: a bystander with a stable integer id and a type name (``"car"``,
``"pedestrian"``, ``"cyclist"``, ``"slm"``...). At each ego state an observer either
saw the ego or did not.

*Frame*: where an observer stands. Driving observers carry a pose
``(x, y, heading)`` and see the ego in their own frame (:class:`RigidFrame2D`); text
observers have no frame (:class:`IdentityFrame`).

The environment's duty
----------------------
A *predictable* environment puts an :class:`EgoStep` in ``info[EGO_STEP_KEY]`` on
``reset`` and on every ``step``. It reports what happened; it never computes
predictability itself.

The predictor's duty
--------------------
A predictor (see :class:`Predictor`) maps a batch of :class:`Views` to predictions
of the next ``horizon`` ego states and scores predictions against what really came:
an error per view (metres of average displacement for driving, nats per token for
text). Lower is better; the wrappers turn it into cost and ``predictability = -error``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

__all__ = [
    "EGO_STEP_KEY",
    "FRAMES",
    "STEP_ARRAYS_ATTR",
    "EgoBatch",
    "EgoBatchReporter",
    "EgoStep",
    "FrameTransform",
    "IdentityFrame",
    "Predictor",
    "RigidFrame2D",
    "Views",
    "concat_poses",
    "find_layer",
    "iter_layers",
    "step_arrays",
]

EGO_STEP_KEY = "ego_step"
"""``info`` key under which a predictable environment reports its :class:`EgoStep`."""


@dataclass(frozen=True)
class EgoStep:
    """What a predictable environment reports for one env step.

    Attributes:
        states: The ego's new states produced by this step, world frame, oldest
            first. Shape ``(T, D)`` float (driving: ``T = 1``, ``D = 2``, metres) or
            ``(T,)`` int64 token ids (text: ``T`` = completion length). On ``reset``
            the initial state(s) of the episode.
        observer_ids: Stable ids of the observers present, shape ``(M,)`` int64. An
            id is never reused for another observer within an episode.
        observer_types: Type name of each observer, shape ``(M,)`` (``str`` objects).
        visible: Whether each observer saw the ego at each new state, shape
            ``(M, T)`` bool.
        observer_frames: Pose of each observer at the end of this step, shape
            ``(M, F)`` float, interpreted by ``frame`` (``RigidFrame2D``: ``F = 3``,
            ``(x [m], y [m], heading [rad])``). ``None`` when ``frame`` is identity.
        frame: Name of the frame transform, a key of :data:`FRAMES`.
        episode_start: True for the report that ``reset`` returns.
        context: Domain extras passed through to the predictor untouched (for text:
            ``{"prompt_ids": np.ndarray}``). Never read by the wrappers.
    """

    states: np.ndarray
    observer_ids: np.ndarray
    observer_types: np.ndarray
    visible: np.ndarray
    observer_frames: np.ndarray | None = None
    frame: str = "identity"
    episode_start: bool = False
    context: Mapping[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        # Field-wise comparison that understands arrays (the generated dataclass __eq__
        # raises on array fields); gymnasium's check_env compares infos with ``==``.
        if not isinstance(other, EgoStep):
            return NotImplemented
        for name in ("states", "observer_ids", "observer_types", "visible", "observer_frames"):
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None):
                return False
            if a is not None and not np.array_equal(np.asarray(a), np.asarray(b)):
                return False
        return (
            self.frame == other.frame
            and self.episode_start == other.episode_start
            and dict(self.context).keys() == dict(other.context).keys()
            and all(
                np.array_equal(np.asarray(self.context[k]), np.asarray(other.context[k]))
                for k in self.context
            )
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays: unhashable

    @classmethod
    def trusted(cls, **fields: Any) -> EgoStep:
        """An :class:`EgoStep` from fields that are valid by construction (every field
        given), without :meth:`__post_init__`'s checks: about a third of the cost on a
        simulator's hot path. The intersection env and its batched twin build theirs
        this way; their tests compare every field with a validated ``EgoStep``."""
        step = object.__new__(cls)
        step.__dict__.update(fields)
        return step

    def __post_init__(self) -> None:
        states = np.asarray(self.states)
        if states.ndim not in (1, 2):
            raise ValueError(f"EgoStep.states: expected shape (T,) or (T, D), got {states.shape}")
        t = states.shape[0]
        m = np.asarray(self.observer_ids).shape[0]
        if np.asarray(self.observer_ids).shape != (m,):
            raise ValueError(
                f"EgoStep.observer_ids: expected shape (M,), got {np.asarray(self.observer_ids).shape}"
            )
        if np.asarray(self.observer_types).shape != (m,):
            raise ValueError(
                f"EgoStep.observer_types: expected shape ({m},), got {np.asarray(self.observer_types).shape}"
            )
        if np.asarray(self.visible).shape != (m, t):
            raise ValueError(
                f"EgoStep.visible: expected shape ({m}, {t}) (observers, new states), "
                f"got {np.asarray(self.visible).shape}"
            )
        if self.frame not in FRAMES:
            raise ValueError(f"EgoStep.frame: expected one of {sorted(FRAMES)}, got {self.frame!r}")
        if self.frame != "identity":
            f = FRAMES[self.frame].pose_size
            if self.observer_frames is None or np.asarray(self.observer_frames).shape != (m, f):
                got = (
                    None if self.observer_frames is None else np.asarray(self.observer_frames).shape
                )
                raise ValueError(
                    f"EgoStep.observer_frames: expected shape ({m}, {f}) for frame "
                    f"{self.frame!r}, got {got}"
                )


@dataclass(frozen=True, eq=False)
class EgoBatch:
    """The batched twin of :class:`EgoStep`: one new ego state in each of ``B`` worlds
    of a batched env, observers held in fixed *slots*.

    A batched env (e.g. :class:`~bystander.envs.intersection.vec_env.IntersectionVecEnv`)
    reports one after every step (all worlds, before auto-reset) and one for the worlds
    it reset (their first state). Slot ``(b, a)`` holds one observer for as long as
    ``present[b, a]`` stays true and ``observer_ids[b, a]`` keeps its value; a new id
    or an absent step starts a new observer (as an id entering or leaving an
    :class:`EgoStep`). Per world, the observers present with their ids, types,
    visibility and frames are exactly what that world's :class:`EgoStep` would hold
    (in slot order rather than id order).

    Attributes:
        worlds: World indices covered, ``(B,)`` int64.
        states: Each world's new ego state, ``(B, D)`` float64 (driving: metres).
        observer_ids: Id of the observer in each slot, ``(B, A)`` int64 (any value where
            not present).
        present: Whether a slot holds an observer, ``(B, A)`` bool.
        observer_types: Type code of each slot, ``(B, A)`` int64, indexing ``type_names``.
        type_names: Type name of each code (codes may share a name).
        visible: Whether each slot's observer saw the new state, ``(B, A)`` bool.
        observer_frames: Pose of each slot's observer, ``(B, A, F)`` float64 (None for
            ``frame="identity"``).
        frame: Key of :data:`FRAMES`.
        episode_start: True when these states are the first of new episodes (after a
            reset), False after a step.
        context: As :attr:`EgoStep.context` (shared by the worlds; ``"dt"`` is read).
    """

    worlds: np.ndarray
    states: np.ndarray
    observer_ids: np.ndarray
    present: np.ndarray
    observer_types: np.ndarray
    type_names: tuple[str, ...]
    visible: np.ndarray
    observer_frames: np.ndarray | None
    frame: str = "rigid2d"
    episode_start: bool = False
    context: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class EgoBatchReporter(Protocol):
    """A batched VecEnv that reports its worlds' ego states as :class:`EgoBatch` es (as
    :class:`~bystander.envs.intersection.vec_env.IntersectionVecEnv` does), so that the
    vector predictability wrapper can take the array path.

    Attributes:
        ego_batch: After each step, the batch of every world (before auto-reset).
        reset_ego_batch: After ``reset``, the batch of every world; after a step, the
            batch of the worlds reset since (their first states), or None when none.
    """

    ego_batch: EgoBatch | None
    reset_ego_batch: EgoBatch | None


STEP_ARRAYS_ATTR = "step_arrays"
"""Attribute in which batched VecEnvs and their wrappers keep the last step's per-world
values as arrays (see :func:`step_arrays`)."""

LayerT = TypeVar("LayerT")


def iter_layers(stack: Any) -> Iterator[Any]:
    """Every layer of a wrapper stack, outermost first, down to the base env.

    Walks the layers' own ``env`` (Gymnasium wrappers) or ``venv`` (SB3 VecEnv
    wrappers) attribute; instance attributes only, because both kinds forward unknown
    attribute lookups to the layer below (so every layer would seem to have them).
    """
    layer = stack
    while layer is not None:
        yield layer
        own = getattr(layer, "__dict__", {})
        layer = own.get("venv", own.get("env"))


def find_layer(stack: Any, cls: type[LayerT]) -> LayerT | None:
    """The outermost layer of ``stack`` (a Gymnasium env or an SB3 VecEnv, wrapped or
    not) that is an instance of ``cls``, or None when none is (see :func:`iter_layers`).
    """
    for layer in iter_layers(stack):
        if isinstance(layer, cls):
            return layer
    return None


def step_arrays(venv: Any) -> Mapping[str, Any] | None:
    """The last step's per-world values as arrays, from the outermost layer of a VecEnv
    stack that keeps them (:data:`STEP_ARRAYS_ATTR`, non-empty), or None when no layer
    does (see :func:`iter_layers`).
    """
    for layer in iter_layers(venv):
        arrays = getattr(layer, "__dict__", {}).get(STEP_ARRAYS_ATTR)
        if arrays:
            return arrays
    return None


@dataclass
class Views:
    """A batch of observers' partial views of the ego, ready for a predictor.

    Attributes:
        states: Ego history expressed in each observer's frame at prediction time,
            oldest first, the last entry being the prediction time. Shape
            ``(B, L, D)`` float or ``(B, L)`` int64 token ids. Entries the observer
            did not see hold the true value but must be ignored: use ``mask``.
        mask: Which history entries the observer saw, shape ``(B, L)`` bool.
        observer_types: Type name per view, shape ``(B,)``.
        observer_ids: Observer id per view, shape ``(B,)`` int64.
        dt: Time between consecutive states in seconds (``1.0`` for tokens).
        context: One mapping per view with the env's ``EgoStep.context``.
        poses: Each observer's pose at prediction time, the frame ``states`` were mapped
            into, shape ``(B, F)`` float (``rigid2d``: ``(x [m], y [m], heading [rad])``,
            world frame); ``None`` when unknown or when ``states`` are world-frame.
            Map-aware predictors read it to place the road network in the view's frame.
    """

    states: np.ndarray
    mask: np.ndarray
    observer_types: np.ndarray
    observer_ids: np.ndarray
    dt: float = 1.0
    context: list[Mapping[str, Any]] | None = None
    poses: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    def take(self, rows: np.ndarray) -> Views:
        """The views ``rows`` (a bool mask ``(B,)`` or integer indices), contexts and poses kept."""
        rows = np.asarray(rows)
        context = None
        if self.context is not None:
            index = (np.flatnonzero(rows) if rows.dtype == np.bool_ else rows).tolist()
            # itemgetter picks in C (a list comprehension cost a visible share of a
            # batched step); of one index it returns the item itself, not a tuple
            if len(index) > 1:
                context = list(itemgetter(*index)(self.context))
            else:
                context = [self.context[i] for i in index]
        return Views(
            states=_take_rows(self.states, rows),
            mask=_take_rows(self.mask, rows),
            observer_types=_take_rows(self.observer_types, rows),
            observer_ids=_take_rows(self.observer_ids, rows),
            dt=self.dt,
            context=context,
            poses=None if self.poses is None else _take_rows(np.asarray(self.poses), rows),
        )


def _take_rows(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values[rows]``; integer rows through ``np.take`` (the same values, several times
    faster than fancy indexing on ``(B, L, D)`` arrays)."""
    if rows.dtype.kind in "iu":
        return np.take(values, rows, axis=0)
    return values[rows]


def concat_poses(views: Sequence[Views]) -> np.ndarray | None:
    """The :attr:`Views.poses` of ``views`` concatenated along the batch axis, ``(B, F)``;
    None unless every batch carries poses."""
    if not views or any(v.poses is None for v in views):
        return None
    return np.concatenate([np.asarray(v.poses) for v in views])


@runtime_checkable
class Predictor(Protocol):
    """An observer's model of the ego. Batched: one call serves all observers.

    Attributes:
        horizon: How many future ego states a prediction covers (>= 1). ``None``
            means "the rest of the trajectory": the wrapper scores once, when the
            episode ends, with the whole trajectory as truth (text domain).
        history: How many past states (including the current one) a view holds;
            ``None`` for the whole trajectory so far.
        unit: Unit of the error, e.g. ``"m"`` or ``"nats/token"``.
    """

    horizon: int | None
    history: int | None
    unit: str

    def predict(self, views: Views) -> np.ndarray:
        """Predict the next ``horizon`` states, ``(B, H, D)`` or ``(B, K, H, D)`` for K modes."""
        ...

    def error(self, predictions: np.ndarray, truth: np.ndarray, views: Views) -> np.ndarray:
        """Error of ``predictions`` against ``truth`` (same frame), shape ``(B,)`` float, finite."""
        ...

    def score(self, views: Views, truth: np.ndarray) -> np.ndarray:
        """``error(predict(views), truth, views)``: error per view, shape ``(B,)``."""
        ...

    def update(self, views: Views, truth: np.ndarray) -> dict[str, float]:
        """One co-training step on (views, truth); frozen predictors return ``{}``."""
        ...


class FrameTransform(Protocol):
    """Maps world-frame ego states into an observer's frame and back."""

    pose_size: int

    def to_frame(self, states: np.ndarray, poses: np.ndarray | None) -> np.ndarray:
        """``states`` ``(B, L, D)`` or ``(B, L)`` world frame -> observer frame, same shape."""
        ...

    def from_frame(self, states: np.ndarray, poses: np.ndarray | None) -> np.ndarray:
        """Inverse of :meth:`to_frame`."""
        ...


class IdentityFrame:
    """No frame: observers see world states as they are (text tokens)."""

    pose_size = 0

    def to_frame(self, states: np.ndarray, poses: np.ndarray | None) -> np.ndarray:
        return states

    def from_frame(self, states: np.ndarray, poses: np.ndarray | None) -> np.ndarray:
        return states


class RigidFrame2D:
    """Planar rigid frame: pose ``(x, y, heading)``; the observer looks along +x.

    ``to_frame`` translates by ``-(x, y)`` then rotates by ``-heading``. Distances are
    preserved, so an ADE computed in any observer frame equals the world-frame ADE.
    States may carry extra features after the first two (left untouched).
    """

    pose_size = 3

    def to_frame(self, states: np.ndarray, poses: np.ndarray | None) -> np.ndarray:
        assert poses is not None
        return _rotate(states, poses, inverse=True)

    def from_frame(self, states: np.ndarray, poses: np.ndarray | None) -> np.ndarray:
        assert poses is not None
        return _rotate(states, poses, inverse=False)


def _rotate(states: np.ndarray, poses: np.ndarray, inverse: bool) -> np.ndarray:
    """Apply the rigid transform of ``poses`` ``(B, 3)`` to ``states`` ``(B, ..., D>=2)``."""
    states = np.asarray(states, dtype=np.float64)
    poses = np.asarray(poses, dtype=np.float64)
    c = np.cos(poses[:, 2])
    s = np.sin(poses[:, 2])
    if states.ndim == 3 and len(states):  # (B, L, D): one compiled pass, same arithmetic
        out = np.array(states, order="C")
        _rigid_kernel()(out, np.ascontiguousarray(poses[:, :2]), c, s, inverse)
        return out
    extra = (1,) * (states.ndim - 2)
    x0 = poses[:, 0].reshape(-1, *extra)
    y0 = poses[:, 1].reshape(-1, *extra)
    c = c.reshape(-1, *extra)
    s = s.reshape(-1, *extra)
    out = states.copy()
    if inverse:
        dx, dy = states[..., 0] - x0, states[..., 1] - y0
        out[..., 0] = c * dx + s * dy
        out[..., 1] = -s * dx + c * dy
    else:
        px, py = states[..., 0], states[..., 1]
        out[..., 0] = c * px - s * py + x0
        out[..., 1] = s * px + c * py + y0
    return out


_KERNEL: list[Any] = []


def _rigid_kernel() -> Any:
    """The compiled in-place transform of :func:`_rotate` (numba, built on first use)."""
    if not _KERNEL:
        from numba import njit

        @njit(cache=True)
        def rigid(out, origin, c, s, inverse):  # pragma: no cover - jit
            for b in range(out.shape[0]):
                x0, y0, cb, sb = origin[b, 0], origin[b, 1], c[b], s[b]
                for j in range(out.shape[1]):
                    if inverse:
                        dx = out[b, j, 0] - x0
                        dy = out[b, j, 1] - y0
                        out[b, j, 0] = cb * dx + sb * dy
                        out[b, j, 1] = -sb * dx + cb * dy
                    else:
                        px = out[b, j, 0]
                        py = out[b, j, 1]
                        out[b, j, 0] = cb * px - sb * py + x0
                        out[b, j, 1] = sb * px + cb * py + y0

        _KERNEL.append(rigid)
    return _KERNEL[0]


FRAMES: dict[str, FrameTransform] = {"identity": IdentityFrame(), "rigid2d": RigidFrame2D()}
"""Frame transforms by name, as referenced by :attr:`EgoStep.frame`."""
