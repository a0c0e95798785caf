#!/usr/bin/env bash
# The tests against the OLDEST versions qtuning states it supports (the lower bounds in pyproject.toml):
#   stage 1: transformers, trl, peft, accelerate, datasets at the `trl` extra's bounds
#            (constraints-oldest.txt), qtuning[all,dev]: every test but the minutes-long ones (pytest -m "not long":
#            tests/conftest.py marks `long` what the test files mark slow themselves);
#   stage 2: QTuningTrainerMixin alone at the `axolotl`/`llamafactory` extras' bounds, no trl
#            (constraints-oldest-mixin.txt): the mixin's tests that need no trl, and the core-install tests.
# Every package not pinned there resolves to what pip picks next to the pins. Each stage's environment is
# built once (torch==2.13.0 first, as scripts/setup.sh) and cached in
#   ${QTUNING_CACHE:-$HOME/.cache/qtuning}/envs/oldest[-mixin]-<hash of its constraints, pyproject.toml
#   and this checkout's path> (the install is editable: it runs this checkout's code).
# Extra arguments go to stage 1's pytest (bash scripts/test_oldest.sh -k trainer); QTUNING_OLDEST_STAGES=1
# (or 2) runs one stage only.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${QTUNING_CACHE:-$HOME/.cache/qtuning}"
stages="${QTUNING_OLDEST_STAGES:-1 2}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# build_env NAME CONSTRAINTS PIP-ARGS...: the cached environment's path on stdout, built if missing
build_env() {
  local name=$1 constraints=$2
  shift 2
  local key env
  key=$( (cat "$constraints" pyproject.toml; pwd) | sha256sum | cut -c1-16)
  env="$cache/envs/$name-$key"
  if [ ! -f "$env/.complete" ]; then
    echo "[oldest] building $env (torch==2.13.0, then $* at $constraints; a few minutes)" >&2
    rm -rf "$env"
    mkdir -p "$cache/envs"
    "${PYTHON:-python3}" -m venv "$env"
    local pip=("$env/bin/python" -m pip --quiet)
    # pip's per-index "location is ignored" warnings drown the real messages
    "${pip[@]}" install --upgrade pip 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) >&2
    "${pip[@]}" install torch==2.13.0 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) >&2
    "${pip[@]}" install -c "$constraints" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) >&2
    touch "$env/.complete"  # last: an interrupted build is rebuilt next time
  fi
  echo "[oldest] $env:" $("$env/bin/python" -m pip list --format=freeze 2>/dev/null \
    | grep -iE '^(torch|transformers|trl|peft|accelerate|datasets)==' | tr '\n' ' ') >&2
  echo "$env"
}

status=0
if [[ " $stages " == *" 1 "* ]]; then
  env=$(build_env oldest constraints-oldest.txt -e ".[all,dev]")
  "$env/bin/qtuning" fetch >/dev/null  # the real model and data (cached, shared with scripts/setup.sh)
  echo "[oldest] stage 1: pytest -m 'not long' $*"
  "$env/bin/python" -m pytest -m "not long" "$@" || status=$?
fi
if [[ " $stages " == *" 2 "* ]]; then
  env=$(build_env oldest-mixin constraints-oldest-mixin.txt -e ".[axolotl,llamafactory]" "pytest>=8" datasets)
  echo "[oldest] stage 2: the mixin without trl"
  "$env/bin/python" -m pytest tests/test_trainer_mixin.py tests/test_core_install.py -k "not sft" || status=$?
fi
exit "$status"
