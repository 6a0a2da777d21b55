"""Answer normalisation and the arithmetic verifier: exact at any size, never a crash."""

from __future__ import annotations

import pytest

from bystander.envs.text_tasks import (
    MAX_EXPONENT,
    ArithmeticVerifier,
    Task,
    extract_answer,
    normalise_number,
)
from bystander.envs.text_v0 import TextEnv


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("42", "42"),
        ("7.0", "7"),
        ("-0", "0"),
        ("-0.000", "0"),
        ("1,234", "1234"),
        ("2.50", "2.5"),
        ("-3.25", "-3.25"),
        ("12345678901234567891", "12345678901234567891"),
        ("9" * 309, "9" * 309),
    ],
)
def test_normalise_number_is_exact(text, canonical):
    assert normalise_number(text) == canonical


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "abc", "", f"1e{MAX_EXPONENT + 1}"])
def test_normalise_number_refuses_what_is_not_a_finite_number(text):
    with pytest.raises(ValueError, match="normalise_number: expected"):
        normalise_number(text)


def test_a_wrong_twenty_digit_answer_is_wrong():
    task = Task("q", normalise_number("12345678901234567891"), "")
    v = ArithmeticVerifier()
    assert v("#### 12345678901234567000", task)["correct"] == 0.0
    assert v("#### 12,345,678,901,234,567,891", task)["correct"] == 1.0


def test_huge_answers_are_scored_not_raised():
    task = Task("q", "5", "")
    v = ArithmeticVerifier()
    assert v("#### " + "9" * 309, task) == {"reward": 0.1, "correct": 0.0, "format_ok": 1.0}
    assert extract_answer("#### " + "9" * (MAX_EXPONENT + 5)) == (None, True)
    assert extract_answer("the answer is " + "9" * (MAX_EXPONENT + 5)) == (None, False)


def test_text_env_scores_a_309_digit_answer():
    env = TextEnv(num_tasks=2, views="full")
    env.reset(seed=0)
    info = env.step("#### " + "9" * 309)[4]
    assert info["format_ok"] and not info["correct"]


@pytest.mark.parametrize(
    ("action", "match"),
    [("ok \ud800 then", "lone surrogate"), ([3, -1], r"token ids in \[0, "),
     ([3, 10**6], r"token ids in \[0, ")],
)  # fmt: skip
def test_text_env_refuses_unencodable_text_and_unknown_token_ids(action, match):
    import numpy as np

    env = TextEnv(num_tasks=2, views="full")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action if isinstance(action, str) else np.array(action))
    env.step("#### 1")  # the episode is still usable
