"""Procedural tasks with worked solutions and exact verifiers (pure Python, no model code).

Two tasks where a 135M model has room to learn and every answer can be checked exactly; both have
long responses (a worked solution, then a last line `Answer: N`), so pruning tokens inside a
response is meaningful. They follow reasoning-gym's `chain_sum` and `letter_counting` generators;
the worked solutions and the prompts are ours.

| set | prompt | response |
|---|---|---|
| arith-steps | a chain of 3-6 integers of 1-3 digits joined by + and - | one line per operation, left to right, then the answer |
| letter-count-steps | how often a letter appears in 3-5 words of Jules Verne's "In the year 2889" | each word spelled with its count, the sum, then the answer |

Records are deterministic in (set, index): record i of a set is the same on every machine. Verne's
text comes from the reasoning-gym wheel (Apache-2.0; the story is in the public domain).
"""

from __future__ import annotations

import random
import re

from ..engine.seeds import derive_seed

ANSWER_PREFIX = "Answer:"
_ANSWER = re.compile(r"Answer:\s*(-?\d+)")
_INTEGER = re.compile(r"-?\d+")

ARITH_SEED = 20261202
LETTERS_SEED = 20261203


def final_answer(text: str) -> str | None:
    """The integer a response commits to: after its last `Answer:`, else its last integer, else None."""
    found = _ANSWER.findall(text)
    if found:
        return str(int(found[-1]))
    found = _INTEGER.findall(text)
    return str(int(found[-1])) if found else None


# ------------------------------------------------------------------------------------- arithmetic
def arith_record(index: int) -> dict:
    """Item `index` of arith-steps: a chain sum and its left-to-right worked solution."""
    rng = random.Random(derive_seed(ARITH_SEED, index, "stream"))
    terms = rng.randint(3, 6)
    digits = rng.randint(1, 3)
    low = 0 if digits == 1 else 10 ** (digits - 1)
    values = [rng.randint(low, 10**digits - 1) for _ in range(terms)]
    ops = [rng.choice("+-") for _ in range(terms - 1)]
    expression = " ".join([str(values[0])] + [f"{op} {v}" for op, v in zip(ops, values[1:])])
    lines, total = [], values[0]
    for step, (op, value) in enumerate(zip(ops, values[1:]), start=1):
        new = total + value if op == "+" else total - value
        lines.append(f"Step {step}: {total} {op} {value} = {new}")
        total = new
    return {
        "id": f"arith-{index}",
        "prompt": f"Calculate {expression}. Work from left to right, one operation per line, "
        f"and finish with a line '{ANSWER_PREFIX} <number>'.",
        "response": "\n".join(lines) + f"\n{ANSWER_PREFIX} {total}",
        "answer": str(total),
        "difficulty": {"terms": terms, "digits": digits},
    }


def arith_records(count: int) -> list[dict]:
    return [arith_record(i) for i in range(count)]


# ------------------------------------------------------------------------------------- letters
def story_words(text: str) -> list[str]:
    """The alphanumeric words of the story (Project Gutenberg's header and licence cut off)."""
    start = text.find("*** START OF")
    end = text.find("*** END OF")
    body = text[text.find("\n", start) + 1 if start >= 0 else 0 : end if end >= 0 else len(text)]
    return [w for w in re.findall(r"\b\w+\b", body) if w.isalnum() and w.isascii()]


def letter_record(index: int, words: list[str]) -> dict:
    """Item `index` of letter-count-steps: count a letter in a span of 3-5 words, spelling each word."""
    rng = random.Random(derive_seed(LETTERS_SEED, index, "stream"))
    length = rng.randint(3, 5)
    start = rng.randint(0, len(words) - length)
    span = words[start : start + length]
    # The letter of a random character of the span: frequent letters are asked about more often, which
    # spreads the answers (a uniform choice among the span's letters makes most answers 1).
    letter = rng.choice([c for c in "".join(span).lower() if c.isalpha()])
    counts = [w.lower().count(letter) for w in span]
    lines = [f"{w}: {'-'.join(w.lower())} -> {n}" for w, n in zip(span, counts)]
    total = sum(counts)
    lines.append(f"Total: {' + '.join(map(str, counts))} = {total}")
    return {
        "id": f"letters-{index}",
        "prompt": f'How many times does the letter "{letter}" appear in the text: "{" ".join(span)}"? '
        f'Spell each word with its count of "{letter}", add the counts, and finish with a line '
        f"'{ANSWER_PREFIX} <number>'.",
        "response": "\n".join(lines) + f"\n{ANSWER_PREFIX} {total}",
        "answer": str(total),
        "difficulty": {"words": length},
    }


def letter_records(count: int, text: str) -> list[dict]:
    words = story_words(text)
    return [letter_record(i, words) for i in range(count)]
