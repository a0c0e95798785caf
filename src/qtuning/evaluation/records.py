"""Evaluation records: reading task files (`task=path.jsonl`), turning a record into the document the
engines score (prompt, answers or choices and the gold one)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import EvalError
from .metrics import gsm8k_gold, math_gold
from .tasks import FINAL_ANSWER_TASKS, TASKS, task_name


def arc_question(record: dict) -> str:
    """The question alone of an ARC record (its prompt minus the lettered choices and instruction)."""
    if "question" in record:
        return record["question"]
    prompt = record["prompt"]
    cut = prompt.find("\n\nA. ")
    return prompt[:cut] if cut >= 0 else prompt


def prepare_doc(task: str, record: dict, index: int = 0) -> dict:
    """One record -> the document the engine sees: id, the user turn (`eval_prompt`), and the gold
    (`choices` + `gold` for ARC, `answers` otherwise)."""
    spec = TASKS[task]
    if spec.kind == "nll":  # index: the row's number in the errors, as training numbers rows
        return nll_doc(record, index)
    try:
        if spec.kind == "choice":
            return {
                "id": str(record["id"]),
                "eval_prompt": arc_question(record),
                "choices": [str(c) for c in record["choices"]],
                "gold": int(record["gold"]),
            }
        if task == "gsm8k":
            answers = [gsm8k_gold(record)]
        elif task == "math":
            answers = [math_gold(record)]
        elif task in FINAL_ANSWER_TASKS:
            answers = [str(record["answer"])]
        else:
            answers = [str(a) for a in (record.get("answers") or [record.get("answer") or record["response"]])]
        return {"id": str(record["id"]), "eval_prompt": record["prompt"], "answers": answers}
    except KeyError as exc:
        raise EvalError(
            f"{task} record {record.get('id', '?')!r} has no field {exc}; expected the record "
            "format of qtuning.data.builtin"
        ) from exc


def nll_doc(record: dict, index: int = 0, source: str = "nll records") -> dict:
    """A record of the `nll` task: any row format `qtuning train` reads (prompt + completion, messages,
    Alpaca), or the built-in sets' prompt + response; the conversation as training would see it. Errors
    name the source, the row and the field."""
    from ..data.records import normalise_row

    doc = normalise_row(record, index, source)
    if not "".join(str(m.get("content") or "") for m in doc["completion"]).strip():
        raise EvalError(f"{source}: row {index} (id {doc['id']!r}): the response is empty: there is nothing to score")
    return {"id": str(doc["id"]), "prompt": doc["prompt"], "completion": doc["completion"]}


def read_records_file(path: str | os.PathLike) -> list[dict]:
    """Records from a .jsonl or .json file (the qtuning.data.builtin record format; for the nll task any
    row format training reads)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"records file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            rows = json.loads(text)
            rows = rows.get("records", rows) if isinstance(rows, dict) else rows
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except OSError as exc:
        raise EvalError(f"records file {path} cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise EvalError(f"records file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise EvalError(f"records file {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(rows, list):
        raise EvalError(f"records file {path}: expected a list of records, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise EvalError(f"records file {path}: record {i} is {type(row).__name__}, not an object with fields")
        if "id" not in row:
            row["id"] = str(i)
    return rows


def parse_task_args(specs: str | list[str]) -> tuple[list[str], dict[str, list[dict]]]:
    """ "arc_easy,squad=heldout.jsonl" -> (["arc_easy", "squad"], {"squad": records of heldout.jsonl})."""
    items = specs.split(",") if isinstance(specs, str) else [s for spec in specs for s in spec.split(",")]
    tasks, records = [], {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        name, _, path = item.partition("=")
        name = task_name(name)
        if name in tasks:
            raise EvalError(f"task {name} is given twice")
        tasks.append(name)
        if path:
            records[name] = read_records_file(path)
            if TASKS[name].kind == "nll":  # check every row now, with the file's name in the error
                for i, row in enumerate(records[name]):
                    nll_doc(row, i, path)
    if not tasks:
        raise EvalError("no eval task given")
    return tasks, records


def task_docs(task: str, limit: int | None = None, records: list[dict] | None = None) -> list[dict]:
    """The prepared documents of a task: the first `limit` of `records` (else of the built-in set)."""
    if records is None:
        if not TASKS[task].builtin:
            raise EvalError(f"task {task} scores your own records: give them as {task}=path.jsonl")
        from ..data.builtin import load_builtin_records

        records = load_builtin_records(TASKS[task].builtin)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise EvalError(f"task {task}: no records to evaluate")
    return [prepare_doc(task, r, i) for i, r in enumerate(records)]
