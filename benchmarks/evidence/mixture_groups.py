"""Which families of the second design's mixture Q-Tuning would keep, seen before any training.

    python benchmarks/evidence/mixture_groups.py     # about 2 min on 2 cores

`qtuning analyze --group-field family` on the suite's 512 mixture training rows (suite_v2.prepare_pool,
deterministic; each row's family is the prefix of its id), scored by the untrained
SmolLM2-135M-Instruct at the suite's max_length, selected at 25% in pools of 16 and as one pool.
In the trained runs Q-Tuning kept the arith rows 0.049 of the times it saw them (RESULTS.md,
2026-12-07): does the analysis show that before a step is taken? Prints one line per family and
writes results/mixture_groups.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from suite_v2 import BASE, WORK, prepare_pool  # noqa: E402

OUT = HERE.parent / "results" / "mixture_groups.json"


def main() -> None:
    from qtuning import QTuningConfig
    from qtuning.insight.analyze import run_analyze
    from qtuning.insight.analyze_config import AnalyzeConfig

    prepare_pool("mixture")
    folder = WORK / "mixture_groups"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (WORK / "mixture" / "train.jsonl").read_text().splitlines() if line.strip()]
    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps({**r, "family": r["id"].split(":")[0]}) + "\n" for r in rows))
    settings = AnalyzeConfig(
        model=BASE["model"],
        data=str(data),
        output=str(folder / "analysis"),
        max_length=BASE["max_length"],
        pool_sizes="16,all",
        group_field="family",
    )
    selection = QTuningConfig(sample_ratio=0.25, token_ratio=0.5)
    result = run_analyze(settings, selection, progress=False)
    record = {
        "what": "qtuning analyze --group-field family on the second design's mixture pool, untrained model",
        "model": BASE["model"],
        "rows": len(rows),
        "max_length": BASE["max_length"],
        "sample_ratio": selection.sample_ratio,
        "pool_sizes": settings.pool_sizes,
        "by_group": result["by_group"],
        "populations": result["populations"],
    }
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    for row in result["by_group"]:
        kept = ", ".join(f"pool {label}: {share:.0%}" for label, share in row["kept_share"].items())
        shares = "/".join(f"{100 * s:.0f}" for s in row["quadrant_shares"])
        print(f"{row['group']:>8s}: {row['samples']} rows, Q1-Q4 {shares}% | kept {kept}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
