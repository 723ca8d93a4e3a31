#!/usr/bin/env bash
# Make a Python environment for the suite on an offline GPU machine whose image already has a CUDA
# torch (and numpy/pandas/scipy/...): a venv that sees the system packages, plus the suite's missing
# dependencies installed from a wheelhouse carried there (`pip download ... -d WHEELS` on a machine
# with an index, for that machine's Python). The CPU pin in constraints.txt is deliberately not used.
#   bash bench/gpu_env.sh WHEELS VENV      then      PYTHON=VENV/bin/python bash bench/gpu_check.sh
set -euo pipefail
wheels=${1:?usage: gpu_env.sh WHEELS_DIR VENV_DIR}
venv=${2:?usage: gpu_env.sh WHEELS_DIR VENV_DIR}
cd "$(dirname "$0")/.."
sys_python=${SYS_PYTHON:-python3}
"$sys_python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
"$sys_python" -m venv --system-site-packages "$venv"
pip=("$venv/bin/python" -m pip install -q --no-index --find-links "$wheels")
# Resolve against what the image has; where a bound cannot be met offline, install the wheels as they are.
"${pip[@]}" mlflow pydantic fpdf2 mlxtend foolbox pypdf pytest-timeout \
  || "${pip[@]}" --no-deps "$wheels"/*.whl
"${pip[@]}" --no-deps adv-lib  # FMN's reference in the tests; its torchvision and visdom are not used
"${pip[@]}" --no-deps --no-build-isolation -e .
"$venv/bin/python" -c 'import mlflow, pydantic, suite; print("mlflow", mlflow.__version__, "suite ok")'
