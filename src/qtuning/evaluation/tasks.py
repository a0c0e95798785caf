"""The evaluation tasks: for each, the built-in set it reads, its kind (log-likelihood of choices,
generation, or the held-out NLL of reference responses) and its metrics; task names and their aliases."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import EvalError


@dataclass(frozen=True)
class EvalTask:
    builtin: str  # the qtuning.data.builtin set ("" where the user's records are required)
    kind: str  # "choice" (log-likelihood), "generate", or "nll" (per-token NLL of each record's response)
    metrics: tuple[str, ...]
    max_new_tokens: int = 0


TASKS: dict[str, EvalTask] = {
    "arc_easy": EvalTask("arc-easy", "choice", ("acc", "acc_norm")),
    "arc_challenge": EvalTask("arc-challenge", "choice", ("acc", "acc_norm")),
    "gsm8k": EvalTask("gsm8k", "generate", ("exact_match",), 320),
    "math": EvalTask("math", "generate", ("exact_match",), 384),
    "triviaqa": EvalTask("triviaqa", "generate", ("exact_match", "f1"), 24),
    "squad": EvalTask("squad", "generate", ("exact_match", "f1"), 24),
    # procedural tasks with worked solutions (qtuning.data.procedural): the integer after "Answer:"
    "arith": EvalTask("arith-steps", "generate", ("exact_match",), 160),
    "letters": EvalTask("letter-count-steps", "generate", ("exact_match",), 224),
    # the held-out NLL of your own records' reference responses (lower is better): nll=heldout.jsonl
    "nll": EvalTask("", "nll", ("nll",)),
}
LOWER_IS_BETTER = ("nll",)  # metrics where a smaller value is the better one
FINAL_ANSWER_TASKS = ("arith", "letters")
ALIASES = {name.replace("_", "-"): name for name in TASKS} | {
    "arc-easy-val": "arc_easy",
    "arc-challenge-val": "arc_challenge",
}


def task_name(name: str) -> str:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in TASKS:
        import difflib

        close = difflib.get_close_matches(key, list(TASKS), n=2)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise EvalError(f"unknown eval task {name!r}{hint}; known: {', '.join(TASKS)}")
    return key
