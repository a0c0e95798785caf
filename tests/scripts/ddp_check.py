"""Two processes (torchrun, gloo, CPU) against one process fed the concatenation of their batches.

    python -m torch.distributed.run --nproc_per_node 2 tests/scripts/ddp_check.py --pool global [--rank1-empty]

Each rank scores and plans its micro-batches with `plan_step`, trains its kept rows under DDP with
the loss normalised by the global kept-token count, and rank 0 compares, against the single-process
run on the concatenated batches: the kept roles, the loss, and the gradients (after DDP's all-reduce).
--rank1-empty gives rank 1 samples without any response: it keeps nothing and must still take part
in every collective. Prints a JSON line with the comparison on rank 0; exit 1 on a mismatch.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tests.helpers

from qtuning import QTuningConfig  # noqa: E402
from qtuning.engine.history import ScoreWindow  # noqa: E402
from qtuning.engine.selection import prepare_scores  # noqa: E402
from qtuning.modeling.probe import score_batch  # noqa: E402
from qtuning.modeling.qtuner import apply_plan, loss_on_kept  # noqa: E402
from qtuning.training.distributed import all_reduce_sum, plan_step  # noqa: E402
from tests.helpers import random_batch, tiny_llama  # noqa: E402

MICRO_BATCHES = 2  # per rank and step
ROWS = 4  # per micro-batch


def batch_of(rank: int, micro: int, empty: bool) -> dict:
    input_ids, attention_mask, labels = random_batch(B=ROWS, T=10 + 2 * rank + micro, seed=100 + 10 * micro + rank)
    if empty:
        labels[:] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def concat(batches: list[dict]) -> dict:
    width = max(b["input_ids"].shape[1] for b in batches)
    pad = {"input_ids": 0, "attention_mask": 0, "labels": -100}
    return {
        k: torch.cat([torch.nn.functional.pad(b[k], (0, width - b[k].shape[1]), value=v) for b in batches])
        for k, v in pad.items()
    }


def run_step(model, batches: list[dict], cfg: QTuningConfig, pool: str, world_size: int, window=None):
    """One optimizer step's worth of forward/backward; returns (plans, global mean loss)."""
    parts = []
    for b in batches:
        scores, loss_mask, attention = score_batch(model, b["input_ids"], b["attention_mask"], b["labels"])
        parts.append(prepare_scores(scores.nll, scores.entropy, loss_mask, cfg, attention))
    local = world_size == 1
    plans = plan_step(parts, cfg, pool, local=local, window=window)
    num_items = all_reduce_sum(sum(p.num_kept_tokens for p in plans), "cpu", local=local)
    reported = torch.zeros(())
    for i, (b, plan) in enumerate(zip(batches, plans)):
        last = i == len(batches) - 1
        context = model.no_sync() if (hasattr(model, "no_sync") and not last) else torch.enable_grad()
        with context:
            loss = loss_on_kept(model, apply_plan(b, plan), num_items) * world_size
            loss.backward()
        reported += loss.detach() / world_size
    if world_size > 1:
        dist.all_reduce(reported)
    return plans, float(reported)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pool", choices=["global", "accumulation"], required=True)
    parser.add_argument("--rank1-empty", action="store_true")
    parser.add_argument("--token-budget", choices=["per_sample", "batch"], default="per_sample")
    parser.add_argument("--history", action="store_true", help="thresholds='history' with a window of 6 samples")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    cfg = QTuningConfig(
        sample_ratio=0.25,
        token_ratio=0.5,
        token_budget=args.token_budget,
        thresholds="history" if args.history else "pool",
        history_window=6,
    )
    window = ScoreWindow(6) if args.history else None

    ddp = DistributedDataParallel(tiny_llama(seed=0))
    mine = [batch_of(rank, i, args.rank1_empty and rank == 1) for i in range(MICRO_BATCHES)]
    plans, loss = run_step(ddp, mine, cfg, args.pool, world_size, window)
    all_windows = [None] * world_size
    dist.all_gather_object(all_windows, None if window is None else window.state_dict())
    all_roles = [None] * world_size
    dist.all_gather_object(all_roles, [p.kept_role.tolist() for p in plans])
    all_masks = [None] * world_size
    dist.all_gather_object(all_masks, [p.token_keep for p in plans])

    def all_masks_for(i):
        return [all_masks[r][i] for r in range(world_size)]

    grads = {n: p.grad.clone() for n, p in ddp.module.named_parameters()}

    if rank == 0:
        # The single process sees micro-batch i as the concatenation of every rank's micro-batch i.
        every = [[batch_of(r, i, args.rank1_empty and r == 1) for i in range(MICRO_BATCHES)] for r in range(world_size)]
        single_batches = [concat([every[r][i] for r in range(world_size)]) for i in range(MICRO_BATCHES)]
        reference = tiny_llama(seed=0)
        ref_window = ScoreWindow(6) if args.history else None
        ref_plans, ref_loss = run_step(reference, single_batches, cfg, args.pool, 1, ref_window)

        def same_window(w):  # the same points in the same order (scores of a padded batch differ by float noise)
            if ref_window is None or w is None:
                return w is None and ref_window is None
            ref = ref_window.state_dict()
            return len(w["ppl"]) == len(ref["ppl"]) and all(
                abs(a - b) <= 1e-6 * max(1.0, abs(b)) for key in ("ppl", "ent") for a, b in zip(w[key], ref[key])
            )

        ok_windows = all(same_window(w) for w in all_windows)
        ok_roles = all(
            ref_plans[i].kept_role.tolist() == sum((all_roles[r][i] for r in range(world_size)), [])
            for i in range(MICRO_BATCHES)
        )
        max_grad_error = max((grads[n] - p.grad).abs().max().item() for n, p in reference.named_parameters())
        finite = all(torch.isfinite(g).all() for g in grads.values())
        ok_tokens = all(
            torch.equal(
                ref_plans[i].token_keep,
                torch.cat(
                    [
                        torch.nn.functional.pad(t, (0, ref_plans[i].token_keep.shape[1] - t.shape[1]))
                        for t in all_masks_for(i)
                    ]
                ),
            )
            for i in range(MICRO_BATCHES)
        )
        result = {
            "pool": args.pool,
            "token_budget": args.token_budget,
            "rank1_empty": args.rank1_empty,
            "roles_equal": ok_roles,
            "token_masks_equal": ok_tokens,
            "windows_equal": ok_windows,
            "loss": loss,
            "reference_loss": ref_loss,
            "max_grad_error": max_grad_error,
            "finite": bool(finite),
            "kept_per_rank": [sum(sum(1 for x in micro if x) for micro in all_roles[r]) for r in range(world_size)],
        }
        print(json.dumps(result), flush=True)
        passed = (
            ok_roles and ok_tokens and ok_windows and finite and abs(loss - ref_loss) < 1e-5 and max_grad_error < 1e-5
        )
        dist.barrier()
        return 0 if passed else 1
    dist.barrier()
    return 0


if __name__ == "__main__":
    from qtuning.cli import exit_process

    exit_process(main())  # destroys the process group and skips the finalization that can hang
