#!/bin/bash
# Pause or resume the running cell of the second design's grid (SIGSTOP / SIGCONT: nothing is lost),
# e.g. while the full test suite needs both cores, and log it: the plan's cap counts machine time a
# cell ran, so the time a cell spent stopped is logged here and taken off its recorded wall-clock
# (PLAN_v2.md, change log 2026-12-06).
#
#   bash benchmarks/evidence/pause_v2.sh pause    # ... the other work ...
#   bash benchmarks/evidence/pause_v2.sh resume
set -euo pipefail
ROOT=$(git rev-parse --show-toplevel)
LOG=$ROOT/benchmarks/results/evidence_v2_pauses.jsonl
action=${1:?pause or resume}
pid=$(pgrep -f "suite_v2.py --cell" | head -1 || true)
[ -n "$pid" ] || { echo "no cell of the grid is running" >&2; exit 1; }
cell=$(tr '\0' ' ' < "/proc/$pid/cmdline" | sed 's/.*--cell \([^ ]*\).*/\1/')
case $action in
  pause) kill -STOP "$pid" ;;
  resume) kill -CONT "$pid" ;;
  *) echo "pause or resume, not $action" >&2; exit 2 ;;
esac
printf '{"action": "%s", "cell": "%s", "time": "%s"}\n' "$action" "$cell" "$(date '+%F %T')" >> "$LOG"
echo "[evidence-v2] $action $cell"
