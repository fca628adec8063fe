#!/usr/bin/env bash
# Installs the dev dependencies, then lint (ruff), type check (mypy on src/) and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev
export TORCHINDUCTOR_CACHE_DIR="$PWD/.cache/inductor" TORCH_EXTENSIONS_DIR="$PWD/.cache/torch_extensions"
export TOKENIZERS_PARALLELISM=false
python3 -m ruff check src tests benchmarks
python3 -m ruff format --check src tests benchmarks
python3 -m mypy src
python3 -m pytest "$@"
