#!/usr/bin/env bash
# Builds the separate virtual environment that `benchmarks/serve_load.py --peer infinity` runs Infinity from:
# infinity-emb 0.0.78 pins old dependencies (numpy<2, click<8.2, typer<0.13, uvicorn<0.33), so it cannot share
# zhembed's environment. The optimum engine runs the same ONNX file that zhembed serves.
#
#   benchmarks/infinity_venv.sh [DIR]     # default: benchmarks/.infinity-venv (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-benchmarks/.infinity-venv}
python3 -m venv "$DIR"
"$DIR/bin/pip" install -q -c constraints.txt "infinity-emb[server,optimum]==0.0.78"
"$DIR/bin/infinity_emb" --help > /dev/null
echo "Infinity is in $DIR/bin/infinity_emb"
