#!/usr/bin/env bash
# Installs the dev dependencies, then lint (ruff), type check (mypy on src/) and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev
export TORCHINDUCTOR_CACHE_DIR="$PWD/.cache/inductor" TORCH_EXTENSIONS_DIR="$PWD/.cache/torch_extensions"
export TOKENIZERS_PARALLELISM=false
# Every dev dependency, the fused SAMP kernels and the data mirror are required here: a missing
# one fails the tests that need it instead of skipping them (tests/helpers.py `require`).
export PRETRAINKIT_STRICT_TESTS=1
export PRETRAINKIT_DATA="${PRETRAINKIT_DATA:-$PWD/../shared/data}"
python3 -m ruff check src tests benchmarks
python3 -m ruff format --check src tests benchmarks
python3 -m mypy src
# One worker per core (at most 8: each holds torch and transformers in memory); the tests of a
# file stay on one worker, so a module's shared fixtures are built once. PYTEST_WORKERS=0 runs
# them in this process.
workers="${PYTEST_WORKERS:-$(python3 -c 'import os; print(min(len(os.sched_getaffinity(0)), 8))')}"
python3 -m pytest -n "$workers" --dist loadfile "$@"
