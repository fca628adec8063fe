#!/usr/bin/env bash
# Installs pretrainkit in editable mode. torch==2.13.0 goes first and constraints.txt keeps it:
# a plain or ranged torch requirement would otherwise pull several GB of CUDA wheels.
# Usage: scripts/install.sh [EXTRA]   (EXTRA = dev for the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -c constraints.txt -e ".${1:+[$1]}"
