"""Q-Tuning in your own PyTorch training loop, with QTuner's three calls.

    .venv/bin/python examples/custom_loop.py                 # SmolLM2-135M-Instruct, real Alpaca rows
    .venv/bin/python examples/custom_loop.py --tiny --steps 3  # a tiny random model, seconds

Everything outside the three marked lines is an ordinary loop: your model, your data, your optimizer.
"""

import argparse

import torch

from qtuning import QTuner, QTuningConfig
from qtuning.data import collate, load_records, tokenize_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer random Llama instead of the real model")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    from qtuning.data.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.model)
    if args.tiny:
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
            )
        )
    records, _ = load_records("alpaca-demo")
    features = [tokenize_record(tokenizer, r, max_length=192) for r in records[: args.steps * args.batch_size]]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    tuner = QTuner(QTuningConfig(sample_ratio=0.25, token_ratio=0.5))

    model.train()
    for step in range(args.steps):
        batch = collate(features[step * args.batch_size : (step + 1) * args.batch_size], tokenizer.pad_token_id)
        plan = tuner.plan(model, batch)  # 1. score with the current model (no grad) and select
        kept = tuner.apply(batch, plan)  # 2. the kept rows, pruned tokens masked
        loss = tuner.loss(model, kept)  # 3. mean CE over the kept tokens
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(
            f"step {step}: loss {loss.item():.4f}, kept {plan.num_kept}/{len(plan.sample_keep)} samples, "
            f"{plan.num_kept_tokens}/{int(plan.num_trainable_tokens.sum())} response tokens, "
            f"trained on a {tuple(kept['input_ids'].shape)} batch"
        )


if __name__ == "__main__":
    main()
