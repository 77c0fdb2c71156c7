#!/usr/bin/env bash
# Create .venv with Python >= 3.12 (XGBoost >= 3.3 needs it) and install the project with its
# test extra. Idempotent: re-installs only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && .venv/bin/python -c "import ensemble_assets" 2>/dev/null; then
  exit 0
fi
find_python() {
  for c in "${PYTHON:-}" python3.13 python3.12 python3; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      echo "$c"; return
    fi
  done
  # pyenv installs that are not the selected version (python3.12 shim refuses them)
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  for p in "$root"/versions/3.1[2-9]*/bin/python3; do
    [ -x "$p" ] && { echo "$p"; return; }
  done
  echo "error: Python >= 3.12 not found (set PYTHON=/path/to/python3.12)" >&2
  exit 1
}
if [ ! -x .venv/bin/python ]; then
  "$(find_python)" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
touch "$stamp"
