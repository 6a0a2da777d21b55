"""NumPy's default generator, compiled: ``np.random.default_rng(seed)`` inside numba kernels.

The simulator's resets draw from one generator per world. NumPy's ``Generator`` cannot be
used from a parallel kernel over worlds (one Python object per world), so this module
reimplements, bit for bit, what ``np.random.default_rng(seed)`` does for the few calls the
resets make: ``SeedSequence(seed)`` hashing into a ``PCG64`` state (XSL-RR 128/64),
``random()`` (53-bit doubles), ``uniform(low, high)`` (``low + (high - low) * random()``)
and ``integers(n)`` (Lemire's bounded method on 32-bit draws, with PCG64's buffered upper
half). A world's generator is a row of 6 uint64 (:data:`GEN_WORDS`): 128-bit state
(high, low), 128-bit increment (high, low), ``has_uint32`` and the buffered ``uinteger``.
The tests compare every function with NumPy's.

All functions are ``njit`` (cached); those taking a row mutate it in place.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "GEN_WORDS",
    "pcg64_bounded",
    "pcg64_double",
    "pcg64_next32",
    "pcg64_next64",
    "pcg64_seed",
    "pcg64_seed_many",
]

GEN_WORDS = 6
"""uint64 words of one generator: state hi / lo, increment hi / lo, has_uint32, uinteger."""

_M32 = np.uint64(0xFFFFFFFF)
_MULT_HI = np.uint64(2549297995355413924)  # PCG_DEFAULT_MULTIPLIER_128
_MULT_LO = np.uint64(4865540595714422341)
_U32 = np.uint64(32)
_ONE = np.uint64(1)
# SeedSequence constants (numpy/random/bit_generator.pyx)
_INIT_A = np.uint64(0x43B0D7E5)
_MULT_A = np.uint64(0x931E8875)
_INIT_B = np.uint64(0x8B51F9DD)
_MULT_B = np.uint64(0x58F38DED)
_MIX_L = np.uint64(0xCA01F9DD)
_MIX_R = np.uint64(0x4973F715)
_XSHIFT = np.uint64(16)


@njit(cache=True, inline="always")
def _mul128(a, b):  # pragma: no cover - jit
    """Full product of two uint64: ``(high, low)`` words."""
    a_lo, a_hi = a & _M32, a >> _U32
    b_lo, b_hi = b & _M32, b >> _U32
    p0, p1, p2, p3 = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi
    mid = (p0 >> _U32) + (p1 & _M32) + (p2 & _M32)
    return p3 + (p1 >> _U32) + (p2 >> _U32) + (mid >> _U32), (p0 & _M32) | (mid << _U32)


@njit(cache=True, inline="always")
def _step(g):  # pragma: no cover - jit
    """``state = state * MULT + inc`` (mod 2**128)."""
    s_hi, s_lo = g[0], g[1]
    hi, lo = _mul128(s_lo, _MULT_LO)
    hi += s_lo * _MULT_HI + s_hi * _MULT_LO
    new_lo = lo + g[3]
    carry = _ONE if new_lo < lo else np.uint64(0)
    g[0] = hi + g[2] + carry
    g[1] = new_lo


@njit(cache=True)
def pcg64_next64(g):  # pragma: no cover - jit
    """Next 64-bit output (``PCG64.random_raw``)."""
    _step(g)
    hi = g[0]
    x = hi ^ g[1]
    rot = hi >> np.uint64(58)
    return (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))


@njit(cache=True)
def pcg64_next32(g):  # pragma: no cover - jit
    """Next 32-bit output: the low half of a 64-bit draw, the high half kept for the next."""
    if g[4]:
        g[4] = np.uint64(0)
        return g[5]
    r = pcg64_next64(g)
    g[4] = _ONE
    g[5] = r >> _U32
    return r & _M32


@njit(cache=True)
def pcg64_double(g):  # pragma: no cover - jit
    """``Generator.random()``: uniform in [0, 1) from the top 53 bits of a 64-bit draw."""
    return (pcg64_next64(g) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def pcg64_bounded(g, n):  # pragma: no cover - jit
    """``Generator.integers(n)`` for ``1 <= n <= 2**32``: int in ``[0, n)``."""
    rng = np.uint64(n - 1)
    if rng == 0:
        return 0
    if rng == _M32:
        return np.int64(pcg64_next32(g))
    excl = rng + _ONE
    m = pcg64_next32(g) * excl
    leftover = m & _M32
    if leftover < excl:
        threshold = (_M32 - rng) % excl
        while leftover < threshold:
            m = pcg64_next32(g) * excl
            leftover = m & _M32
    return np.int64(m >> _U32)


@njit(cache=True, inline="always")
def _hashmix(value, hc):  # pragma: no cover - jit
    value = (value ^ hc) & _M32
    hc = (hc * _MULT_A) & _M32
    value = (value * hc) & _M32
    return value ^ (value >> _XSHIFT), hc


@njit(cache=True, inline="always")
def _mix(x, y):  # pragma: no cover - jit
    r = ((_MIX_L * x) - (_MIX_R * y)) & _M32
    return r ^ (r >> _XSHIFT)


@njit(cache=True)
def pcg64_seed(g, seed):  # pragma: no cover - jit
    """Seed row ``g`` as ``np.random.default_rng(seed)`` (``seed`` uint64, below 2**64)."""
    pool = np.zeros(4, dtype=np.uint64)
    entropy = np.zeros(2, dtype=np.uint64)
    entropy[0] = seed & _M32
    entropy[1] = seed >> _U32
    n_ent = 2 if entropy[1] else 1
    hc = _INIT_A
    for i in range(4):
        pool[i], hc = _hashmix(entropy[i] if i < n_ent else np.uint64(0), hc)
    for i_src in range(4):
        for i_dst in range(4):
            if i_src != i_dst:
                h, hc = _hashmix(pool[i_src], hc)
                pool[i_dst] = _mix(pool[i_dst], h)
    words = np.zeros(8, dtype=np.uint64)  # generate_state(4, uint64) as uint32 words
    hb = _INIT_B
    for i in range(8):
        v = (pool[i % 4] ^ hb) & _M32
        hb = (hb * _MULT_B) & _M32
        v = (v * hb) & _M32
        words[i] = v ^ (v >> _XSHIFT)
    init_hi, init_lo = words[0] | (words[1] << _U32), words[2] | (words[3] << _U32)
    seq_hi, seq_lo = words[4] | (words[5] << _U32), words[6] | (words[7] << _U32)
    g[0] = np.uint64(0)
    g[1] = np.uint64(0)
    g[2] = (seq_hi << _ONE) | (seq_lo >> np.uint64(63))
    g[3] = (seq_lo << _ONE) | _ONE
    _step(g)
    lo = g[1] + init_lo
    g[0] = g[0] + init_hi + (_ONE if lo < init_lo else np.uint64(0))
    g[1] = lo
    _step(g)
    g[4] = np.uint64(0)
    g[5] = np.uint64(0)


@njit(cache=True)
def pcg64_seed_many(gens, rows, seeds):  # pragma: no cover - jit
    """Seed ``gens[rows[i]]`` with ``seeds[i]`` (``gens (N, GEN_WORDS)`` uint64)."""
    for i in range(rows.shape[0]):
        pcg64_seed(gens[rows[i]], seeds[i])
