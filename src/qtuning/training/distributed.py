"""Selection pools across micro-batches and processes (torch.distributed; any backend).

    plans = plan_step(parts, cfg, pool)   # parts: this process's micro-batches of one optimizer step

- "micro_batch": each micro-batch of each process is its own pool (the paper; depends on the
  number of processes and on the accumulation steps);
- "global": micro-batch i of every process forms one pool: the per-sample scores are gathered,
  thresholds and supplement are computed once, identically on every rank, and each rank trains
  its own kept samples (the same selection as one process fed the concatenated batch);
- "accumulation": every micro-batch of the step on every rank forms one pool
  (per_device_batch x gradient_accumulation x world_size samples).

What crosses the network per step: with token_budget="per_sample", 3 numbers per sample (PPL and
Ent as float64, a bool): 17 bytes per sample plus pickling overhead. With token_budget="batch"
the token-level scores travel too (the budget is one global top-k over the pool): about
10 bytes per position (float64 NLL, two bool masks).

A rank that dies or hangs: every collective here waits at most the process group's timeout
(`ddp_timeout` of TrainingArguments, 1800 s by default; gloo honours it for these collectives, measured
5.0 s for a 5 s timeout). When it fires, or the connection to a dead rank breaks, the waiting rank raises
a `CollectiveError` that names itself, the collective and the step ("rank 0: the selection's
all_gather at step 12 timed out after 30.0 s: another rank stopped (died or hung) ..."), which the
`qtuning` command prints as one line; torchrun then ends the other ranks.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from ..engine.config import SELECTION_POOLS, QTuningConfig
from ..engine.history import ScoreWindow
from ..engine.scoring import SampleScores
from ..engine.seeds import derive_seed
from ..engine.selection import ScoredBatch, SelectionPlan, plan_pool
from ..errors import CollectiveError


def world(local: bool = False) -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed or when `local`."""
    if not local and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# how gloo, NCCL and the c10d store word a collective that waited past the timeout or lost its peer
_TIMEOUT_TEXT = ("timed out", "timeout")
_LOST_PEER_TEXT = ("connection closed", "connection reset", "broken pipe", "connection refused", "peer")


def _collective_failure(
    exc: BaseException, what: str, step: int | None, seconds: float, owner: str = "selection"
) -> CollectiveError | None:
    """A CollectiveError for a collective that timed out or lost a rank; None for any other error."""
    text = str(exc).lower()
    at = "" if step is None else f" at step {step}"
    rank = dist.get_rank() if dist.is_initialized() else 0
    if any(t in text for t in _TIMEOUT_TEXT):
        how = f"timed out after {seconds:.1f} s"
    elif any(t in text for t in _LOST_PEER_TEXT):
        how = f"lost its connection after {seconds:.1f} s"
    else:
        return None
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return CollectiveError(
        f"rank {rank}: the {owner}'s {what}{at} {how}: another rank stopped (died or hung); the wait is "
        f"bounded by the process group's timeout (ddp_timeout, TrainingArguments). Cause: {first}"
    )


def _collective(call, what: str, step: int | None, owner: str = "selection"):
    """Run a collective; a timeout or a lost rank becomes a one-line CollectiveError naming `owner`'s `what`."""
    started = time.monotonic()
    try:
        return call()
    except (RuntimeError, OSError, ValueError) as exc:  # DistBackendError / DistNetworkError are RuntimeErrors
        failure = _collective_failure(exc, what, step, time.monotonic() - started, owner)
        if failure is None:
            raise
        raise failure from exc


def gather_objects(obj, local: bool = False, step: int | None = None, owner: str = "selection") -> list:
    """obj from every rank, in rank order (a single-element list outside torch.distributed).
    step and owner (whose collective it is): named in the CollectiveError raised when another rank stopped."""
    rank, size = world(local)
    if size == 1:
        return [obj]
    out = [None] * size
    _collective(lambda: dist.all_gather_object(out, obj), "all_gather", step, owner)
    return out


def _shareable(part: ScoredBatch, cfg: QTuningConfig) -> ScoredBatch:
    """What the other ranks need of a part: its per-sample scores, plus its token grids only for
    the pool-wide token budget."""
    if cfg.token_budget == "batch" and cfg.token_ratio < 1.0:
        return part
    scores = SampleScores(part.scores.ppl, part.scores.entropy, part.scores.num_tokens, part.scores.has_response)
    return ScoredBatch(token_nll=None, loss_mask=None, attention_mask=None, scores=scores)


def plan_step(
    parts: list[ScoredBatch],
    cfg: QTuningConfig,
    pool: str = "global",
    local: bool = False,
    seed: int | None = None,
    progress: float = 0.0,
    window: ScoreWindow | None = None,
    step: int | None = None,
) -> list[SelectionPlan]:
    """Plans for this process's micro-batches of one optimizer step (one per part, in order).

    Every rank must call it at the same step with the same number of parts (the Trainer's even
    batches guarantee it): it is a collective for "global" and "accumulation". `local=True` plans
    as if this process were alone, even inside torch.distributed. `seed` (the same on every rank,
    new at every step) drives the baselines' random draws; `progress` is the fraction of training done.
    `window` (cfg.thresholds="history") takes every pool in the order planned: with "global" and
    "accumulation" pools every rank plans the same pools, so every rank's window stays the same;
    with "micro_batch" pools each rank's window holds its own pools only. `step` (the optimizer step) is
    named in the CollectiveError raised when another rank stopped.
    """
    if pool not in SELECTION_POOLS:
        raise ValueError(f"selection_pool={pool!r} is not allowed: expected one of {', '.join(SELECTION_POOLS)}")
    rank, size = world(local)

    def pool_seed(number: int) -> int | None:
        """The seed of the step's pool `number` (1-based), the same on every rank."""
        return None if seed is None else derive_seed(seed, number, "pool")

    if pool == "micro_batch" or (size == 1 and pool == "global"):
        # every micro-batch of every rank is its own pool, with its own random stream
        return [
            plan_pool([part], cfg, seed=pool_seed(rank * len(parts) + i + 1), progress=progress, window=window)[0]
            for i, part in enumerate(parts)
        ]
    shared = gather_objects([_shareable(p, cfg) for p in parts], local, step=step)  # [rank][micro]
    counts = {len(s) for s in shared}
    if len(counts) != 1:
        raise RuntimeError(
            f"ranks hold different numbers of micro-batches this step ({sorted(counts)}): "
            "cannot form a common selection pool"
        )

    def part_of(r: int, i: int) -> ScoredBatch:
        return parts[i] if r == rank else shared[r][i]

    if pool == "global":
        return [
            plan_pool(
                [part_of(r, i) for r in range(size)],
                cfg,
                wanted=[rank],
                seed=pool_seed(i + 1),
                progress=progress,
                window=window,
            )[rank]
            for i in range(len(parts))
        ]
    # accumulation: one pool, ordered micro-batch first, then rank (micro-batch i of the step is the
    # concatenation of every rank's i-th micro-batch, as one process would see the global batch)
    order = [(i, r) for i in range(len(parts)) for r in range(size)]
    wanted = [k for k, (_, r) in enumerate(order) if r == rank]
    plans = plan_pool(
        [part_of(r, i) for i, r in order], cfg, wanted=wanted, seed=seed, progress=progress, window=window
    )
    return [plans[k] for k in wanted]


def all_reduce_sum(value: int, device, local: bool = False, step: int | None = None) -> torch.Tensor:
    """A count summed over ranks, as a tensor on `device` (step: named in a CollectiveError)."""
    total = torch.tensor(value, dtype=torch.long, device=device)
    if world(local)[1] > 1:
        _collective(lambda: dist.all_reduce(total), "all_reduce", step)
    return total
