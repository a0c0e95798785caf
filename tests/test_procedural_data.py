"""qtuning.data.procedural: the arith and letter-counting tasks (worked solutions that are correct, records
that are deterministic and distinct) and the final-answer reading that scores them."""

import re

import pytest

from qtuning.data.procedural import arith_record, final_answer, letter_record, story_words
from qtuning.evaluation import score_generation


@pytest.mark.parametrize("index", range(40))
def test_arith_worked_solution_is_correct_arithmetic(index):
    record = arith_record(index)
    expression = re.search(r"Calculate (.+?)\. Work", record["prompt"]).group(1)
    assert str(eval(expression)) == record["answer"]  # left to right is Python's order for + and -
    lines = record["response"].splitlines()
    for line in lines[:-1]:
        a, op, b, _, c = re.match(r"Step \d+: (-?\d+) ([+-]) (\d+) (=) (-?\d+)", line).groups()
        assert int(c) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    assert lines[-1] == f"Answer: {record['answer']}"
    assert 3 <= record["difficulty"]["terms"] <= 6 and len(lines) == record["difficulty"]["terms"]


def test_arith_records_are_deterministic_and_distinct():
    assert arith_record(7) == arith_record(7)
    assert arith_record(7)["prompt"] != arith_record(8)["prompt"]


def test_letter_counting_counts_and_spelling():
    text = "*** START OF THE BOOK ***\nThe cheerful engineer keeps seventeen green trees.\n*** END OF THE BOOK ***"
    words = story_words(text)
    assert words == ["The", "cheerful", "engineer", "keeps", "seventeen", "green", "trees"]
    for index in range(30):
        record = letter_record(index, words)
        letter = re.search(r'the letter "(.)"', record["prompt"]).group(1)
        span = re.search(r'in the text: "(.+?)"\?', record["prompt"]).group(1).split()
        assert record["answer"] == str(sum(w.lower().count(letter) for w in span))
        lines = record["response"].splitlines()
        for word, line in zip(span, lines):
            assert line == f"{word}: {'-'.join(word.lower())} -> {word.lower().count(letter)}"
        assert lines[-2].endswith(f"= {record['answer']}") and lines[-1] == f"Answer: {record['answer']}"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Step 1: 3 + 4 = 7\nAnswer: 7", "7"),
        ("Answer: -12 and then Answer: 5", "5"),  # the last Answer: line counts
        ("so the result is 42.", "42"),  # no Answer: line: the last integer
        ("Answer: 007", "7"),
        ("no number at all", None),
    ],
)
def test_final_answer(text, expected):
    assert final_answer(text) == expected


def test_arith_metric_scores_the_final_answer():
    doc = {"answers": ["17"]}
    assert score_generation("arith", "Step 1: 10 + 7 = 17\nAnswer: 17", doc) == {"exact_match": 1.0}
    assert score_generation("letters", "Total: 1 + 2 = 3\nAnswer: 3", doc) == {"exact_match": 0.0}
