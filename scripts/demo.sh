#!/usr/bin/env bash
# The quickstart: install, then `pretrainkit demo` (SST-2 from the data mirror; see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export TORCHINDUCTOR_CACHE_DIR="$PWD/.cache/inductor" TORCH_EXTENSIONS_DIR="$PWD/.cache/torch_extensions"
exec pretrainkit demo "$@"
