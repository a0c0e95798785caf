"""`qtuning eval`: benchmark a model on the built-in data (or on your own records of the same format).

    qtuning eval --model DIR --tasks arc_easy,arc_challenge,gsm8k,triviaqa,squad,math --limit 300 -o results.json
    qtuning eval --model DIR --tasks squad=heldout.jsonl,arc_easy=arc_heldout.jsonl

Python:

    from qtuning.evaluation import evaluate, evaluate_dir
    results = evaluate(model, tokenizer, ["arc_easy", "squad"], limit=100)
    results = evaluate_dir("outputs/run1", ["squad"], records={"squad": heldout_records})
    results["tasks"]["squad"] == {"exact_match": ..., "f1": ..., "n": 100, ...}

Two engines, the same prompts, documents and metrics (tested to give identical scores):
- `lm_eval` (the default): lm-evaluation-harness. For every task we write the documents as JSONL plus
  a task YAML (`dataset_path: json`, `dataset_kwargs.data_files` -> that file) into
  `<qtuning cache>/eval/<content hash>/`, and run `lm_eval.simple_evaluate` on an `HFLM` that wraps
  the already-loaded model, `apply_chat_template=True`, offline. Those YAMLs also run with the
  `lm_eval` command line (`--include_path` that folder).
- `native`: `qtuning.evaluation.native`. Log-likelihood runs each ARC prompt once and scores all its choices off
  the shared KV cache, with the LM head only at scored positions (3.3x faster than lm_eval on ARC,
  best run against best run on a shared 2-core CPU); generation is `model.generate`, as in lm_eval.

Prompts: the user turn rendered with the tokenizer's chat template and the generation prompt, as
training renders `record["prompt"]` (`qtuning.data.tokenize_record`). Per task:

| task | user turn | scored | metrics |
|---|---|---|---|
| arc_easy, arc_challenge | the question alone (no lettered list) | log-likelihood of each choice text right after the assistant header | acc, acc_norm |
| gsm8k | record["prompt"] | greedy answer, <= 320 new tokens | exact_match: number after "####", else the last number |
| math | record["prompt"] | greedy answer, <= 384 new tokens | exact_match: last \\boxed{} vs the solution's last \\boxed{} |
| triviaqa, squad | record["prompt"] | greedy answer, <= 24 new tokens, first line | exact_match, f1 (SQuAD normalisation, max over answers) |
| arith, letters | record["prompt"] | greedy answer, <= 160 / 224 new tokens | exact_match: the integer after the last "Answer:" (else the last integer) |

acc and acc_norm are lm_eval's: argmax of the summed log-likelihood of each choice, and argmax of
that sum divided by the choice's length in characters (bytes for non-ASCII text).
"""

from ..errors import EvalError
from .api import evaluate, evaluate_dir, format_table, load_for_eval
from .command import EvalConfig, run_eval
from .lm_eval_engine import write_lm_eval_tasks
from .metrics import (
    choice_accuracy,
    exact_match_score,
    extract_gsm8k_answer,
    f1_score,
    first_line,
    gsm8k_gold,
    last_boxed,
    lm_eval_process_final_answer,
    lm_eval_process_gsm8k,
    lm_eval_process_math,
    lm_eval_process_qa,
    math_equal,
    math_gold,
    normalize_answer,
    normalize_math_answer,
    score_generation,
)
from .native import choice_loglikelihoods, generate_responses, render_prompt, response_nll
from .records import arc_question, parse_task_args, prepare_doc, read_records_file, task_docs
from .tasks import ALIASES, FINAL_ANSWER_TASKS, TASKS, EvalTask, task_name

__all__ = [
    "EvalError",
    "ALIASES",
    "FINAL_ANSWER_TASKS",
    "TASKS",
    "EvalConfig",
    "EvalTask",
    "arc_question",
    "choice_accuracy",
    "choice_loglikelihoods",
    "evaluate",
    "evaluate_dir",
    "exact_match_score",
    "extract_gsm8k_answer",
    "f1_score",
    "first_line",
    "format_table",
    "generate_responses",
    "gsm8k_gold",
    "last_boxed",
    "lm_eval_process_final_answer",
    "lm_eval_process_gsm8k",
    "lm_eval_process_math",
    "lm_eval_process_qa",
    "load_for_eval",
    "math_equal",
    "math_gold",
    "normalize_answer",
    "normalize_math_answer",
    "parse_task_args",
    "prepare_doc",
    "read_records_file",
    "render_prompt",
    "response_nll",
    "run_eval",
    "score_generation",
    "task_docs",
    "task_name",
    "write_lm_eval_tasks",
]
