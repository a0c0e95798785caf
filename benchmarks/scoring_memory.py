"""Peak memory and time of naive vs chunked per-token scoring at SmolLM2-135M shapes.

    .venv/bin/python benchmarks/scoring_memory.py [--batch 8] [--seq 512]

Both methods start from the same final hidden states (B, T, 576) and output embedding
(49,152 x 576) and compute NLL and entropy over the full vocabulary at the trainable positions:
- naive: the whole (B, T, V) logits, log_softmax, softmax (what `model(...).logits` leads to);
- chunked: `qtuning.token_scores_from_hidden`, logits for `chunk` positions at a time.
Each method runs in a fresh subprocess; the figure is the growth of peak RSS above what the
inputs already hold. Writes benchmarks/results/scoring_memory.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _inputs(batch: int, seq: int, hidden: int, vocab: int):
    import torch

    g = torch.Generator().manual_seed(0)
    h = torch.randn(batch, seq, hidden, generator=g)
    w = torch.randn(vocab, hidden, generator=g) * 0.05
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    labels[:, : seq // 2] = -100  # the prompt half carries no loss
    return h, w, labels


def _naive(h, w, labels):
    import torch

    from qtuning.engine.scoring import shift_labels

    logits = (h @ w.T).float()  # (B, T, V)
    log_probs = torch.log_softmax(logits, dim=-1)  # (B, T, V)
    entropy = -(log_probs.exp() * log_probs).sum(-1)  # another (B, T, V) temporary
    targets = shift_labels(labels)
    mask = targets != -100
    nll = -log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, nll, 0.0), torch.where(mask, entropy, 0.0)


def _chunked(h, w, labels, chunk):
    from qtuning.engine.scoring import token_scores_from_hidden

    s = token_scores_from_hidden(h, w, labels, chunk_size=chunk)
    return s.nll, s.entropy


def _worker(method: str, args: dict, queue) -> None:
    import torch

    torch.set_num_threads(args["threads"])
    h, w, labels = _inputs(args["batch"], args["seq"], args["hidden"], args["vocab"])
    fn = (lambda: _naive(h, w, labels)) if method == "naive" else (lambda: _chunked(h, w, labels, args["chunk"]))
    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    with torch.no_grad():
        for _ in range(args["repeats"]):
            start = time.perf_counter()
            nll, ent = fn()
            times.append(time.perf_counter() - start)
            del nll, ent
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"method": method, "extra_peak_mib": (peak_kib - base_kib) / 1024, "median_s": statistics.median(times)})


def _run(method: str, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(method, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = vars(parser.parse_args())

    scored = args["batch"] * (args["seq"] // 2)
    print(
        f"shapes: B={args['batch']} T={args['seq']} H={args['hidden']} V={args['vocab']}, "
        f"{scored} trainable positions scored, chunk {args['chunk']}, {args['threads']} threads"
    )
    naive = _run("naive", args)
    chunked = _run("chunked", args)
    full_logits_mib = args["batch"] * args["seq"] * args["vocab"] * 4 / 2**20
    print(f"{'method':10s} {'extra peak MiB':>15s} {'median s':>10s}")
    for r in (naive, chunked):
        print(f"{r['method']:10s} {r['extra_peak_mib']:15.0f} {r['median_s']:10.3f}")
    mem_ratio = chunked["extra_peak_mib"] / naive["extra_peak_mib"]
    time_ratio = chunked["median_s"] / naive["median_s"]
    print(f"one fp32 (B, T, V) tensor is {full_logits_mib:.0f} MiB")
    print(f"chunked / naive: peak memory {mem_ratio:.3f}, time {time_ratio:.3f}")
    RESULTS.mkdir(exist_ok=True)
    out = {
        "benchmark": "scoring_memory",
        "shapes": {k: args[k] for k in ("batch", "seq", "hidden", "vocab", "chunk")},
        "threads": args["threads"],
        "machine": platform.processor() or platform.machine(),
        "naive": naive,
        "chunked": chunked,
        "full_logits_mib": full_logits_mib,
        "ratio_memory_chunked_to_naive": mem_ratio,
        "ratio_time_chunked_to_naive": time_ratio,
    }
    (RESULTS / "scoring_memory.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS / 'scoring_memory.json'}")


if __name__ == "__main__":
    main()
