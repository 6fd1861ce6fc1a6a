#!/usr/bin/env bash
# Builds the separate virtual environment that the OpenVINO peer runs from (`benchmarks/first_pass.py --peer
# openvino`): sentence-transformers with its OpenVINO backend (optimum-intel, openvino, nncf) and datasets for the
# calibration set. It pulls transformers and its own torch, which zhembed's runtime has no need of.
#
#   benchmarks/openvino_venv.sh [DIR]     # default: benchmarks/.openvino-venv (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-benchmarks/.openvino-venv}
python3 -m venv "$DIR"
# optimum-intel 2.2 needs huggingface-hub < 1.22, which datasets would otherwise move past.
"$DIR/bin/pip" install -q -c constraints.txt "sentence-transformers[openvino]" nncf datasets "huggingface-hub>=1.5,<1.22"
# The registry's torchvision is built against the CUDA torch: with the CPU torch its C ops fail to register, and
# transformers then fails on `import AutoProcessor`. Nothing here needs it.
"$DIR/bin/pip" uninstall -y -q torchvision
"$DIR/bin/python" -c "from optimum.intel.openvino import OVQuantizer"
echo "The OpenVINO peer runs from $DIR/bin/python"
