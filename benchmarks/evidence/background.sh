#!/bin/bash
# Resume the whole evidence grid in the background, one cell at a time, across working sessions:
# the plan's cells from their pinned commit (stages 1-2 in the per-seed order of PLAN.md's
# 2026-12-02 23:15 entry, then stages 3-5 in the plan's order), then the addendum's cells from
# theirs and the paper arm rerun from that commit (PLAN.md, 2026-12-03 23:36), then the three-epoch
# follow-up (PLAN.md, 2026-12-03 18:05) from the plan's commit. Cells
# already finished (in this checkout or in a worktree) are skipped; a cell killed half-way reruns
# from its start. Finished cells are copied into this checkout's
# benchmarks/results/evidence_cells/ every minute: commit them, then
# `python benchmarks/evidence/suite.py --report`.
#
#   nohup bash benchmarks/evidence/background.sh > .evidence-background.log 2>&1 &
set -euo pipefail
ROOT=$(git rev-parse --show-toplevel)
PYTHON=$ROOT/.venv/bin/python
CELLS=benchmarks/results/evidence_cells
PLAN_COMMIT=7f7a0f9      # PLAN.md: the plan's own cells
ADDENDUM_COMMIT=4266496  # PLAN.md change log, 2026-12-02 18:25

# The machine of this session's cells, from now until the next line: with `probe_precision: auto`
# (the suite's setting) the probing arms score in bf16 on a CPU with native bf16 (AVX512-BF16 or
# AMX), in fp32 elsewhere (PLAN.md change log, 2026-12-03 19:06).
(cd "$ROOT" && "$PYTHON" -c '
import json, os, time
from qtuning.training.sft_config import cpu_has_native_bf16
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
bf16 = cpu_has_native_bf16()
print(json.dumps({"from": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu, "cores": os.cpu_count(),
                  "native_bf16": bf16, "probe": "bf16" if bf16 else "fp32"}))
' >> benchmarks/results/evidence_machines.jsonl)

copy_back() { cp -n "$1/$CELLS"/*.json "$ROOT/$CELLS/" 2>/dev/null || true; }

# run_in DIR COMMIT ARGS...: suite.py ARGS in a worktree of COMMIT at DIR, copying cells back meanwhile
run_in() {
    local dir=$1 commit=$2
    shift 2
    [ -d "$dir" ] || git -C "$ROOT" worktree add --detach "$dir" "$commit"
    [ "$(git -C "$dir" rev-parse --short=7 HEAD)" = "$commit" ] || { echo "$dir is not at $commit" >&2; exit 1; }
    mkdir -p "$dir/$CELLS"
    cp -n "$ROOT/$CELLS"/*.json "$dir/$CELLS/" 2>/dev/null || true
    (cd "$dir" && "$PYTHON" benchmarks/evidence/suite.py "$@") &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 60
        copy_back "$dir"
    done
    wait "$pid"
    copy_back "$dir"
}

stages_1_2=$(grep -v '^#' "$ROOT/benchmarks/evidence/order_stages_1_2.txt" | paste -sd, -)
run_in "$ROOT/../evidence-run" "$PLAN_COMMIT" --only "$stages_1_2"
run_in "$ROOT/../evidence-run" "$PLAN_COMMIT"
run_in "$ROOT/../evidence-addendum" "$ADDENDUM_COMMIT" --addendum
rerun=$(grep -v '^#' "$ROOT/benchmarks/evidence/order_recheck_rerun.txt" | paste -sd, -)
run_in "$ROOT/../evidence-addendum" "$ADDENDUM_COMMIT" --only "$rerun"
followup=$(grep -v '^#' "$ROOT/benchmarks/evidence/order_followup.txt" | paste -sd, -)
run_in "$ROOT/../evidence-run" "$PLAN_COMMIT" --only "$followup"
echo "every cell of the plan, its addendum and the follow-up has finished"
