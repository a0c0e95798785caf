"""Shared test fixtures' builders: a tiny random-init Llama (fast, no download)."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(vocab_size: int = 128, hidden: int = 32, layers: int = 2, seed: int = 0, tie: bool = True):
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
