"""Generated tasks with several verifiable reasoning templates and difficulty levels."""

from __future__ import annotations

import pytest

from bystander.envs.text_tasks import (
    DIFFICULTIES,
    TEMPLATES,
    ArithmeticVerifier,
    Task,
    check_equations,
    generate_tasks,
    heuristic_accuracy,
    solutions_for,
    task_template,
)


@pytest.mark.parametrize("difficulty", sorted(DIFFICULTIES))
def test_every_template_of_every_task_is_correct_and_recognised(difficulty):
    verifier = ArithmeticVerifier()
    for task in generate_tasks(300, seed=11, difficulty=difficulty):
        sols = dict(task.solutions)
        assert {"steps", "words"} <= set(sols) <= set(TEMPLATES)
        assert len(set(sols.values())) == len(sols)  # templates are told apart
        for name, text in sols.items():
            assert verifier(text, task)["correct"] == 1.0
            good, total = check_equations(text)
            assert good == total >= 1, (name, text)
            assert task_template(text, task) == name
            assert task_template(" " + text.replace(" ", "  "), task) == name


def test_templates_differ_in_order_and_intermediate_results():
    sols = solutions_for(14, [("sub", 6), ("add", 2), ("add", 3)])
    assert sols == {
        "steps": "14 - 6 = 8. 8 + 2 = 10. 10 + 3 = 13.\n#### 13",
        "words": "Start with 14. Take away 6: 8. Add 2: 10. Add 3: 13.\n#### 13",
        "reordered": "14 + 2 = 16. 16 + 3 = 19. 19 - 6 = 13.\n#### 13",
        "expression": "14 - 6 + 2 + 3 = 13.\n#### 13",
    }
    # a reordering that starts like steps is not offered: a reader could not tell them apart
    assert "reordered" not in solutions_for(4, [("add", 1), ("sub", 2), ("add", 3)])
    # products keep their place; an additive run before one is bracketed once
    sols = solutions_for(7, [("sub", 3), ("mul", 3), ("mul", 2)])
    assert sols["expression"] == "(7 - 3) * 3 * 2 = 24.\n#### 24"
    assert "reordered" not in sols  # nothing to reorder
    assert "expression" not in solutions_for(9, [("sub", 4)])  # one step: same as steps


def test_wrong_claims_are_caught():
    assert check_equations("7 + 5 = 12. 12 - 3 = 8.") == (1, 2)
    assert check_equations("(7 + 5) * 2 - 3 = 21.") == (1, 1)
    assert check_equations("Start with 7. Add 5: 12. Times 2: 25.") == (1, 2)
    assert check_equations("no claims") == (0, 0)
    task = generate_tasks(1, seed=2)[0]
    assert task_template("something else\n#### " + task.answer, task) is None
    assert task_template(task.solution, Task("q", "1", "#### 1")) is None  # no templates


def test_seeded_prefix_stable_and_template_choice_does_not_move_the_stream():
    a = generate_tasks(40, seed=5, difficulty=3)
    assert generate_tasks(10, seed=5, difficulty=3) == a[:10]
    mixed = generate_tasks(40, seed=5, difficulty=3, template="mixed")
    assert [t.question for t in mixed] == [t.question for t in a]
    assert len({t.template for t in mixed}) == len(TEMPLATES)
    words = generate_tasks(40, seed=5, difficulty=3, template="words")
    assert all(t.template == "words" and t.solution.startswith("Start") for t in words)
    assert all(t.template == "steps" and t.difficulty == 3 for t in a)


def test_difficulty_levels_bound_the_numbers():
    for level, spec in DIFFICULTIES.items():
        tasks = generate_tasks(300, seed=1, difficulty=level)
        assert max(int(t.answer) for t in tasks) <= spec["cap"]
        assert min(int(t.answer) for t in tasks) >= 1
        steps = [t.solution.count(" = ") for t in tasks]
        assert min(steps) == spec["ops"][0] and max(steps) == spec["ops"][1]


def test_heuristics_are_a_low_floor_on_the_default_level():
    train = generate_tasks(2000, seed=1000)
    tasks = generate_tasks(1000, seed=10_000)
    h = heuristic_accuracy(tasks, reference=train)
    assert h["n"] == 1000 and h["best"] == max(h["sum"], h["most_common"], h["last_number"])
    assert 0.0 < h["sum"] < 0.25 and h["most_common"] < 0.1
    # the sum heuristic is right exactly when every step adds
    t = Task("Ann has 3 pens. Ann finds 4 more. How many pens now?", "7", "")
    assert heuristic_accuracy([t])["sum"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"difficulty": 4}, "difficulty: expected one of"), ({"template": "poem"}, "template:"),
     ({"max_value": 1}, "max_value: expected >= 2"), ({"n": 0}, "n: expected")],
)  # fmt: skip
def test_bad_arguments_name_the_field(kwargs, match):
    args = {"n": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate_tasks(**args)
