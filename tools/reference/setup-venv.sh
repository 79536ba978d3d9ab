#!/usr/bin/env bash
# Creates (once) the reference venv outside the repository and prints its python.
# The venv is ~6 GB (torch from PyPI is the CUDA build), so it lives in a cache folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv="${PTM_REF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ptm/ref-venv}"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
  "$venv/bin/pip" install --quiet -r "$here/requirements.txt" >&2
  cp "$here/requirements.txt" "$stamp"
fi
echo "$venv/bin/python"
