# Sourced by the device_check scripts: unbuffered output into $OUT (default runs/device), the
# wheels carried in `.whl` installed (the accelerator machine has JAX with CUDA but no package
# index; see experiments/device_check_ppo.sh for how `.whl` is made), the device named.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-runs/device}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:.
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
