"""The `lm_eval` engine: task documents written as JSONL plus a task YAML into the cache, run through lm-
evaluation-harness on the loaded model."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

from .tasks import FINAL_ANSWER_TASKS, TASKS


def _task_yaml(task: str, data_file: Path) -> dict:
    spec = TASKS[task]
    config = {
        "task": f"qtuning_{task}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "doc_to_text": "{{eval_prompt}}",
    }
    if spec.kind == "choice":
        config |= {
            "output_type": "multiple_choice",
            "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{gold}}",
            "target_delimiter": "",
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in spec.metrics],
        }
    else:
        hook = {
            "gsm8k": "lm_eval_process_gsm8k",
            "math": "lm_eval_process_math",
            **{t: "lm_eval_process_final_answer" for t in FINAL_ANSWER_TASKS},
        }.get(task, "lm_eval_process_qa")
        config |= {
            "output_type": "generate_until",
            "doc_to_target": "{{answers[0]}}",
            "generation_kwargs": {"until": [], "max_gen_toks": spec.max_new_tokens, "do_sample": False},
            "process_results": f"!function qtuning.evaluation.{hook}",
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in spec.metrics],
        }
    return config


def write_lm_eval_tasks(docs: dict[str, list[dict]], root: Path | None = None) -> Path:
    """The task folder for lm_eval: <task>.jsonl + <task>.yaml per task, content-addressed."""
    import yaml

    from ..data.assets import cache_root

    payload = {t: "\n".join(json.dumps(d, ensure_ascii=False) for d in ds) + "\n" for t, ds in docs.items()}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(root or cache_root() / "eval") / digest
    folder.mkdir(parents=True, exist_ok=True)
    for task, text in payload.items():
        data_file = folder / f"{task}.jsonl"
        if not data_file.is_file() or data_file.read_text(encoding="utf-8") != text:
            data_file.write_text(text, encoding="utf-8")
        config = yaml.safe_dump(_task_yaml(task, data_file), sort_keys=False, allow_unicode=True, width=1000)
        config = re.sub(r"'(!function [\w.]+)'", r"\1", config)  # a YAML tag, not a string
        (folder / f"{task}.yaml").write_text(config, encoding="utf-8")
    return folder


def _lm_eval_run(
    model, tokenizer, docs: dict[str, list[dict]], batch_size: int, max_length: int | None, progress: bool
) -> tuple[dict, dict]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import logging

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    for name in ("lm-eval", "lm_eval"):
        logging.getLogger(name).setLevel(logging.WARNING)
    folder = write_lm_eval_tasks(docs)
    lm = HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=batch_size,
        max_length=max_length,
        device=str(next(model.parameters()).device),
    )
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    timings = {}
    results = {}
    for task in docs:  # one task at a time, so each gets its own wall time
        started = time.perf_counter()
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=[f"qtuning_{task}"],
            task_manager=manager,
            apply_chat_template=True,
            num_fewshot=0,
            log_samples=False,
            bootstrap_iters=1000,
            cache_requests=False,
            verbosity="WARNING",
        )
        timings[task] = time.perf_counter() - started
        raw = out["results"][f"qtuning_{task}"]
        row = {}
        for metric in TASKS[task].metrics:
            row[metric] = float(raw[f"{metric},none"])
            stderr = raw.get(f"{metric}_stderr,none")
            if isinstance(stderr, (int, float)):
                row[f"{metric}_stderr"] = float(stderr)
        row["n"] = int(out["n-samples"][f"qtuning_{task}"]["effective"])
        results[task] = row
    return results, {"timings": timings, "task_folder": str(folder), "lm_eval": lm_eval.__version__}
