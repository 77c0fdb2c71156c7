#!/usr/bin/env bash
# Create .venv with Python >= 3.12 (XGBoost >= 3.3 needs it) and install the project with its
# test extra, every package at the exact version locked in constraints.txt. Idempotent:
# re-installs only when pyproject.toml or constraints.txt changed since the last install.
#
#   bash scripts/bootstrap.sh           create / update .venv
#   bash scripts/bootstrap.sh --lock    regenerate constraints.txt from a fresh resolve of
#                                       pyproject.toml (a throwaway venv; .venv is not touched)
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.installed
lock=constraints.txt
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

if [ "${1:-}" = "--lock" ]; then
  # Fresh resolve: a non-editable install of a copy of the source tree (so no build/ or
  # egg-info lands here) into a throwaway venv, without constraints, then pip freeze.
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  py=$(find_python)
  tar --exclude=./.venv --exclude=./.git --exclude=./data --exclude=./build --exclude='*.egg-info' \
      --exclude=__pycache__ --exclude=./.pytest_cache --exclude=./.ruff_cache -cf - . | (mkdir "$tmp/src" && tar -xf - -C "$tmp/src")
  "$py" -m venv "$tmp/venv"
  "$tmp/venv/bin/python" -m pip install -q --upgrade pip
  "$tmp/venv/bin/python" -m pip install -q "$tmp/src[test]"
  {
    echo "# Exact versions of every package that \`pip install '.[test]'\` resolves to (transitive"
    echo "# ones included), generated with $("$tmp/venv/bin/python" -c 'import platform; print("Python", platform.python_version(), "on", platform.system(), platform.machine())')."
    echo "# scripts/bootstrap.sh and CI install with \`pip install -c constraints.txt -e '.[test]'\`."
    echo "# The ranges that the project accepts are in pyproject.toml; this file is what is tested."
    echo "# Regenerate (from the repository root) after changing dependencies in pyproject.toml:"
    echo "#   bash scripts/bootstrap.sh --lock"
    "$tmp/venv/bin/python" -m pip freeze --exclude-editable | grep -viE '^ensemble[-_]assets([ =@]|$)'
  } > "$lock.tmp"
  mv "$lock.tmp" "$lock"
  echo "wrote $lock ($(grep -vc '^#' "$lock") packages)"
  exit 0
fi

if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt "$lock" ] \
   && .venv/bin/python -c "import ensemble_assets" 2>/dev/null; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  "$(find_python)" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c "$lock" -e '.[test]'
touch "$stamp"
