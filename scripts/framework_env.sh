#!/usr/bin/env bash
# A cached virtual environment holding one fine-tuning framework at its own pins, then qtuning on top.
#
#   bash scripts/framework_env.sh NAME            # NAME: axolotl | llamafactory
#   bash scripts/framework_env.sh NAME --path     # print the env's folder only (installs nothing)
#
# Steps (each skipped when its stamp says it is already done; the stamps live in the env):
#   1. a fresh venv at ${QTUNING_CACHE:-~/.cache/qtuning}/envs/NAME-VERSION;
#   2. torch FIRST, from this machine's disk (Axolotl: 2.13.0, the CPU wheel; LLaMA-Factory: 2.14.1, see
#      below), then the framework at its own pins, with torch (and for LLaMA-Factory torchvision and
#      torchaudio) held by a constraints file so that nothing swaps torch for a build downloaded from PyPI;
#      -> freeze-framework.txt: `pip freeze` of the env BEFORE qtuning;
#   3. `pip install -e REPO[NAME]` (editable; `--no-deps` when pyproject.toml has no such extra yet);
#      -> freeze-with-qtuning.txt, and qtuning-install.json: the packages qtuning changed, added or
#         removed, `pip check`'s verdict and output, and the seconds each install took.
# If the framework cannot be installed, one line says so and the script exits 3.
# A qtuning install that fails exits 4. `pip check` findings do not fail the script: they are printed
# and recorded in qtuning-install.json (pip_check_clean) for the tests to judge.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

say() { echo "[framework-env] $*"; }
now() { date +%s.%N; }
secs() { python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$1" "$2"; }

name="${1:-}"
case "$name" in
  axolotl)
    version=0.19.0
    # torch 2.13.0: the CPU wheel on this machine's disk (Axolotl accepts torch 2.11-2.13). Axolotl pins its
    # own stack (transformers, trl, peft, accelerate, datasets); only torch is held here.
    torch_version=2.13.0
    constraints="torch==$torch_version"
    framework_args=("axolotl==$version")
    ;;
  llamafactory)
    version=0.9.5
    # LLaMA-Factory imports torchaudio (data/mm_plugin.py) and, through transformers' image utils,
    # torchvision, even for text-only SFT. PyPI has no CPU build of either: the builds that accept torch
    # 2.13.0 (torchvision 0.28.0, torchaudio 2.11.1) link libtorch_cuda and fail to import next to the
    # CPU wheel ("operator torchvision::nms does not exist"), so LLaMA-Factory cannot start there.
    # What works on this CPU: torch 2.14.1 + torchvision 0.29.1, the CUDA builds that pip takes from this
    # machine's disk (no download of the CUDA libraries), and torchaudio 2.11.1 (requires torch>=2.11).
    # All three are held by the constraints file, so nothing moves torch again.
    torch_version=2.14.1
    constraints="torch==$torch_version
torchvision==0.29.1
torchaudio==2.11.1"
    # --no-binary: built from LLaMA-Factory's sdist
    framework_args=(--no-binary llamafactory "llamafactory==$version" torchvision==0.29.1 torchaudio==2.11.1)
    ;;
  *)
    echo "usage: $0 axolotl|llamafactory [--path]" >&2
    exit 2
    ;;
esac
torch_pin="torch==$torch_version"

cache="${QTUNING_CACHE:-$HOME/.cache/qtuning}"
env="$cache/envs/$name-$version"
if [ "${2:-}" = "--path" ]; then
  echo "$env"
  exit 0
fi
mkdir -p "$cache/envs"
log="$cache/envs/$name-$version.log"
py="$env/bin/python"

quiet_pip() {  # pip's per-index "location is ignored" warnings drown the real messages
  "$py" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
last_error() { grep -E "ERROR|error:" "$log" | head -n 1 | cut -c1-300 || true; }

# ---- steps 1-2: the framework, in a fresh venv -------------------------------------------------------
fw_want=$(printf '%s\n' "$name $version" "$constraints" "${framework_args[*]}" | sha256sum | cut -d' ' -f1)
fw_stamp="$env/.framework-installed"
if [ "$(cat "$fw_stamp" 2>/dev/null || true)" != "$fw_want" ]; then
  rm -rf "$env"
  say "$name $version: creating a fresh venv at $env (log: $log)"
  "${PYTHON:-python3}" -m venv "$env"
  printf '%s\n' "$constraints" > "$env/framework-constraints.txt"
  : > "$log"
  t0=$(now)
  say "$name $version: installing $torch_pin first (then the framework)"
  if ! quiet_pip install --upgrade pip >>"$log" 2>&1 \
     || ! quiet_pip install -c "$env/framework-constraints.txt" "$torch_pin" >>"$log" 2>&1; then
    say "$name $version cannot be installed here: $torch_pin did not install ($(last_error)); log: $log"
    exit 3
  fi
  t1=$(now)
  say "$name $version: torch installed in $(secs "$t0" "$t1") s; installing ${framework_args[*]}"
  if ! quiet_pip install -c "$env/framework-constraints.txt" "${framework_args[@]}" >>"$log" 2>&1; then
    say "$name $version cannot be installed here: pip failed ($(last_error)); log: $log"
    exit 3
  fi
  t2=$(now)
  torch_now=$("$py" -c "import torch; print(torch.__version__)" 2>>"$log" || echo "unimportable")
  case "$torch_now" in
    "$torch_version" | "$torch_version+"*) ;;
    *) say "$name $version cannot be installed here: torch is $torch_now after the framework install, not $torch_version; log: $log"
       exit 3 ;;
  esac
  quiet_pip freeze > "$env/freeze-framework.txt"
  "$py" - "$env/framework-install.json" "$name" "$version" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" \
    "$torch_now" <<'EOF'
import json, sys
path, name, version, torch_s, fw_s, torch_version = sys.argv[1:]
json.dump({"framework": name, "version": version, "torch": torch_version,
           "install_seconds": {"torch": float(torch_s), "framework": float(fw_s)}}, open(path, "w"), indent=1)
EOF
  echo "$fw_want" > "$fw_stamp"
  rm -f "$env/.qtuning-installed"
  say "$name $version: framework installed in $(secs "$t1" "$t2") s (torch $torch_now kept); freeze before qtuning:" \
      "$env/freeze-framework.txt ($(wc -l < "$env/freeze-framework.txt") packages)"
else
  say "$name $version: framework already installed at $env (cached)"
fi

# ---- step 3: qtuning on top (editable) ---------------------------------------------------------------
extra_exists=$("$py" - "$repo/pyproject.toml" "$name" <<'EOF'
import sys, tomllib
extras = tomllib.load(open(sys.argv[1], "rb"))["project"].get("optional-dependencies", {})
print("yes" if sys.argv[2] in extras else "no")
EOF
)
q_want=$(printf '%s\n' "$fw_want" "$repo" "$extra_exists" | cat - "$repo/pyproject.toml" | sha256sum | cut -d' ' -f1)
q_stamp="$env/.qtuning-installed"
if [ "$(cat "$q_stamp" 2>/dev/null || true)" != "$q_want" ]; then
  # An earlier qtuning install that changed the framework's packages leaves no clean "before": start over.
  if [ -f "$env/freeze-with-qtuning.txt" ]; then
    if ! diff -q <(grep -vi '^#\|^-e \|^qtuning' "$env/freeze-framework.txt") \
                 <(quiet_pip freeze | grep -vi '^#\|^-e \|^qtuning') >/dev/null; then
      say "$name $version: an earlier qtuning install changed the framework's packages: rebuilding the env"
      rm -f "$fw_stamp"
      exec bash "$0" "$name"
    fi
  fi
  if [ "$extra_exists" = yes ]; then
    target="$repo[$name]"; deps_args=()
    say "$name $version: installing qtuning: pip install -e '$target'"
  else
    target="$repo"; deps_args=(--no-deps)
    say "$name $version: pyproject.toml has no [$name] extra yet: pip install --no-deps -e '$target'"
  fi
  t0=$(now)
  if ! quiet_pip install -c "$env/framework-constraints.txt" "${deps_args[@]}" -e "$target" >>"$log" 2>&1; then
    say "$name $version: qtuning did not install ($(last_error)); log: $log"
    exit 4
  fi
  t1=$(now)
  quiet_pip freeze > "$env/freeze-with-qtuning.txt"
  set +e
  check_out=$(quiet_pip check 2>&1)
  check_rc=$?
  set -e
  "$py" - "$env" "$name" "$version" "$extra_exists" "$(secs "$t0" "$t1")" "$check_rc" "$check_out" <<'EOF'
import json, re, sys
env, name, version, extra_exists, q_s, check_rc, check_out = sys.argv[1:]

def read(path):  # {normalised name: version}; editable lines and qtuning itself left out
    out = {}
    for line in open(path):
        line = line.strip()
        if not line or line.startswith(("#", "-e ")) or "==" not in line and " @ " not in line:
            continue
        pkg, ver = re.split(r"==| @ ", line, maxsplit=1)
        key = re.sub(r"[-_.]+", "-", pkg).lower()
        if key != "qtuning":
            out[key] = ver
    return out

before, after = read(f"{env}/freeze-framework.txt"), read(f"{env}/freeze-with-qtuning.txt")
changed = [f"{k}: {before[k]} -> {after[k]}" for k in sorted(before) if k in after and after[k] != before[k]]
removed = [f"{k}: {before[k]} -> (removed)" for k in sorted(before) if k not in after]
added = [f"{k}=={after[k]}" for k in sorted(after) if k not in before]
fw = json.load(open(f"{env}/framework-install.json"))
record = {
    "framework": name, "version": version, "env": env, "torch": fw["torch"],
    "qtuning_install": f"pip install -e REPO[{name}]" if extra_exists == "yes" else "pip install --no-deps -e REPO (no extra)",
    "install_seconds": {**fw["install_seconds"], "qtuning": float(q_s)},
    "qtuning_changed_packages": changed + removed, "qtuning_added_packages": added,
    "pip_check_clean": check_rc == "0", "pip_check_output": check_out.strip(),
}
json.dump(record, open(f"{env}/qtuning-install.json", "w"), indent=1)
EOF
  echo "$q_want" > "$q_stamp"
  say "$name $version: qtuning installed in $(secs "$t0" "$t1") s; freeze after: $env/freeze-with-qtuning.txt"
else
  say "$name $version: qtuning already installed (cached)"
fi

"$py" - "$env/qtuning-install.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
say = lambda s: print(f"[framework-env] {r['framework']} {r['version']}: {s}")
say(f"install seconds: {r['install_seconds']} ({r['qtuning_install']})")
say("packages qtuning changed: " + (", ".join(r["qtuning_changed_packages"]) or "none"))
say("packages qtuning added: " + (", ".join(r["qtuning_added_packages"]) or "none"))
say("pip check: " + ("clean" if r["pip_check_clean"] else "NOT clean"))
for line in r["pip_check_output"].splitlines():
    print(f"[framework-env]   {line}")
EOF
say "$name $version: ready at $env"
