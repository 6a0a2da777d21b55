"""Tokenizer helpers shared by the text env, the SLM observers and the trainer.

They live in the env layer so that the text env needs nothing from :mod:`bystander.llm`.

Byte-level tokenizers (``ByT5Tokenizer``: id = byte + 3, ids 0/1/2 are pad/eos/unk)
need no files, so the built-in tiny models use one. A byte-level model can write a
byte sequence that is not valid UTF-8; everywhere in this project such text is
decoded with ``errors="replace"`` (invalid bytes become U+FFFD), never raised on.

Retokenisation between two tokenizers goes through decoded text and character
offsets: :func:`char_spans` gives each policy token's ``[start, end)`` character
span in the decoded text; a fast tokenizer's ``offset_mapping`` gives the same for
the observer's tokens, and overlapping spans map one onto the other.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "byte_tokenizer",
    "char_spans",
    "decode",
    "encode",
    "encode_with_offsets",
    "is_byte_tokenizer",
    "same_tokenizer",
    "special_ids",
]

_BYTE_OFFSET = 3  # ByT5: ids 0, 1, 2 are pad, eos, unk; byte b has id b + 3.


def byte_tokenizer() -> Any:
    """A ``ByT5Tokenizer`` (byte-level, 384 ids, built without any file)."""
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


def is_byte_tokenizer(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` is ByT5's byte-level tokenizer."""
    return type(tokenizer).__name__ == "ByT5Tokenizer"


def special_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special tokens (pad, eos, bos, unk...)."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    return {int(i) for i in ids if i is not None}


def same_tokenizer(a: Any, b: Any) -> bool:
    """Whether two tokenizers map text to the same ids (same object, or same class and vocab)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if is_byte_tokenizer(a):
        return True
    try:
        return a.get_vocab() == b.get_vocab()
    except Exception:  # pragma: no cover - exotic tokenizers
        return False


def _ids_list(ids: Sequence[int] | np.ndarray) -> list[int]:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"ids: expected shape (T,), got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"ids: expected integer token ids, got dtype {arr.dtype}")
    return [int(i) for i in arr]


def decode(tokenizer: Any, ids: Sequence[int] | np.ndarray) -> str:
    """Decode token ids to text, dropping special tokens; invalid UTF-8 -> U+FFFD."""
    ids = _ids_list(ids)
    if is_byte_tokenizer(tokenizer):
        data = bytes(i - _BYTE_OFFSET for i in ids if _BYTE_OFFSET <= i < 256 + _BYTE_OFFSET)
        return data.decode("utf-8", errors="replace")
    return tokenizer.decode(ids, skip_special_tokens=True)


def encode(tokenizer: Any, text: str) -> np.ndarray:
    """Token ids of ``text`` without special tokens, shape ``(T,)`` int64."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    if is_byte_tokenizer(tokenizer):
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + _BYTE_OFFSET
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return np.asarray(ids, dtype=np.int64).reshape(-1)


def char_spans(tokenizer: Any, ids: Sequence[int] | np.ndarray) -> tuple[str, np.ndarray]:
    """Decoded text and each token's character span in it.

    Returns:
        ``(text, spans)`` with ``spans`` of shape ``(T, 2)`` int64, ``[start, end)``
        character offsets into ``text``; special tokens get an empty span. For a byte
        tokenizer a multi-byte character belongs to every byte that forms it; an
        invalid byte maps to the U+FFFD it decodes to.
    """
    ids = _ids_list(ids)
    spans = np.zeros((len(ids), 2), dtype=np.int64)
    if is_byte_tokenizer(tokenizer):
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        n_chars = 0
        pending: list[int] = []  # tokens whose bytes are not yet a whole character
        for t, i in enumerate(ids):
            if not _BYTE_OFFSET <= i < 256 + _BYTE_OFFSET:
                spans[t] = (n_chars, n_chars)
                continue
            out = dec.decode(bytes([i - _BYTE_OFFSET]))
            pending.append(t)
            if out:
                pieces.append(out)
                for p in pending:
                    spans[p] = (n_chars, n_chars + len(out))
                n_chars += len(out)
                pending = []
        out = dec.decode(b"", final=True)
        if out:
            pieces.append(out)
            for p in pending:
                spans[p] = (n_chars, n_chars + len(out))
        return "".join(pieces), spans
    specials = special_ids(tokenizer)
    text = ""
    for t, i in enumerate(ids):
        if i in specials:
            spans[t] = (len(text), len(text))
            continue
        new = tokenizer.decode(ids[: t + 1], skip_special_tokens=True)
        start = min(len(text), len(new))
        spans[t] = (start, len(new))
        text = new
    return text, spans


def encode_with_offsets(tokenizer: Any, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of ``text`` and their ``[start, end)`` character offsets, ``(T,)`` and ``(T, 2)``.

    Raises:
        TypeError: The tokenizer cannot report offsets (use a fast tokenizer).
    """
    if is_byte_tokenizer(tokenizer):
        ids = encode(tokenizer, text)
        spans = np.zeros((len(ids), 2), dtype=np.int64)
        pos = 0
        for ch_index, ch in enumerate(text):
            n = len(ch.encode("utf-8"))
            spans[pos : pos + n] = (ch_index, ch_index + 1)
            pos += n
        return ids, spans
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"tokenizer: retokenisation needs a fast tokenizer with offsets, got "
            f"{type(tokenizer).__name__}"
        )
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64).reshape(-1)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    return ids, offsets
