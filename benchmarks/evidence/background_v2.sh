#!/bin/bash
# Resume the second design's grid (PLAN_v2.md) in the background, one cell at a time, across
# working sessions: every cell runs from the plan's pinned commit in a worktree; finished cells are
# copied into this checkout's benchmarks/results/evidence_v2_cells/ every minute (commit them, then
# `python benchmarks/evidence/suite_v2.py --report`). Cells already finished are skipped; a cell
# killed half-way reruns from its start. A cell still running from an earlier start (its grid
# process killed) is waited for, not run twice.
#
#   nohup bash benchmarks/evidence/background_v2.sh > .evidence-v2-background.log 2>&1 &
set -euo pipefail
ROOT=$(git rev-parse --show-toplevel)
PYTHON=$ROOT/.venv/bin/python
CELLS=benchmarks/results/evidence_v2_cells
# the plan's own commit is the first that added PLAN_v2.md (later commits only append change-log entries)
PLAN_COMMIT=$(git -C "$ROOT" log --diff-filter=A --format=%h --abbrev=7 -- benchmarks/evidence/PLAN_v2.md | tail -1)
DIR=$ROOT/../evidence-v2-run

copy_back() { mkdir -p "$ROOT/$CELLS"; cp -n "$DIR/$CELLS"/*.json "$ROOT/$CELLS/" 2>/dev/null || true; }

[ -d "$DIR" ] || git -C "$ROOT" worktree add --detach "$DIR" "$PLAN_COMMIT"
[ "$(git -C "$DIR" rev-parse --short=7 HEAD)" = "$PLAN_COMMIT" ] || { echo "$DIR is not at $PLAN_COMMIT" >&2; exit 1; }
mkdir -p "$DIR/$CELLS" "$DIR/.evidence_v2"
while pgrep -f "suite_v2.py --cell" >/dev/null; do sleep 30; done
cp -n "$ROOT/$CELLS"/*.json "$DIR/$CELLS/" 2>/dev/null || true
echo "[evidence-v2] $(date '+%F %T') running from $PLAN_COMMIT in $DIR"
# the cells run the pinned code; their order is this checkout's (the plan's change log may add cells)
if [ $# -eq 0 ]; then set -- --only "$("$PYTHON" "$ROOT/benchmarks/evidence/suite_v2.py" --print-order)"; fi
(cd "$DIR" && "$PYTHON" benchmarks/evidence/suite_v2.py "$@") &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
    sleep 60
    copy_back
done
wait "$pid" || true
copy_back
echo "[evidence-v2] $(date '+%F %T') the grid process ended"
