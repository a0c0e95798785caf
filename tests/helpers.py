"""What the tests share: a tiny random-init Llama (fast, no download), its tokenizer and data, a tiny model
saved as a folder, Alpaca-style JSONL rows, and `run_cli` (the `qtuning` program in a subprocess).
transformers is imported inside the builders, so importing this module is light."""

import json
import subprocess
import sys
from pathlib import Path

import torch


def tiny_llama(vocab_size: int = 128, hidden: int = 32, layers: int = 2, seed: int = 0, tie: bool = True):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tie,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def random_batch(vocab_size: int = 128, B: int = 4, T: int = 12, seed: int = 0):
    """input_ids, attention_mask, labels (B, T): right-padded rows, a prompt then a response."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab_size, (B, T), generator=g)
    attention_mask = torch.ones(B, T, dtype=torch.long)
    labels = input_ids.clone()
    for b in range(B):
        length = T - b  # row b has b pad tokens
        prompt = 2 + b % 3
        attention_mask[b, length:] = 0
        input_ids[b, length:] = 0
        labels[b, length:] = -100
        labels[b, :prompt] = -100
    return input_ids, attention_mask, labels


def tiny_tokenizer():
    """The real SmolLM2 tokenizer (fetched by the set-up); tiny_dataset only uses ids below 128."""
    from transformers import AutoTokenizer

    from qtuning.data.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))


def tiny_dataset(n: int = 32, vocab_size: int = 128, seed: int = 0):
    """Pre-tokenised rows (input_ids, labels) of random lengths, each a prompt then a response."""
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(6, 24, (1,), generator=g))
        prompt = int(torch.randint(2, 5, (1,), generator=g))
        ids = torch.randint(3, vocab_size, (length,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return Dataset.from_list(rows)


def tiny_chat_llama(tokenizer):
    """A tiny random Llama (seed 0) over the real SmolLM2 tokenizer's vocabulary, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config).eval()


def make_tiny_model_dir(folder: Path) -> Path:
    """tiny_chat_llama saved with the real SmolLM2 tokenizer, loadable by path like any HF model."""
    tokenizer = tiny_tokenizer()
    tiny_chat_llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_jsonl_rows(path: Path, n: int, empty_last: bool = False) -> Path:
    """n Alpaca-style rows of varied length (and one with an empty answer at the end)."""
    rows = [
        {"instruction": f"Say the number {i}.", "input": "", "output": f"The number is {i}. " * (1 + i % 4)}
        for i in range(n)
    ]
    if empty_last:
        rows.append({"instruction": "An empty answer", "input": "", "output": "   "})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


# the `qtuning` program as tests start it: the interpreter running the tests, `-m qtuning.cli`
QTUNING_CLI = (sys.executable, "-m", "qtuning.cli")


def run_cli(*argv: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """`qtuning ARGV...` in a subprocess, output captured as text; never raises on a non-zero exit."""
    return subprocess.run([*QTUNING_CLI, *argv], capture_output=True, text=True, timeout=timeout, **kwargs)
