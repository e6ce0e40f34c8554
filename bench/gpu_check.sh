#!/usr/bin/env bash
# One GPU session's checks of the splatting renderer (about 8 minutes on an H200).
#
#   bash bench/gpu_check.sh            # from the repository root; results under $OUT
#
# Needs the carried wheels in .whl/ (gsplat, ml_collections, grain, array_record,
# cloudpickle, portpicker, tensorboardX; .whl/extra/protobuf only if the machine lacks it).
# Stages, each writing its own $OUT/*.txt / *.md so partial results come back:
#   0. environment, wheel install            -> $OUT/0_env.txt
#   1. gsplat's CUDA JIT build (once)        -> $OUT/1_gsplat_build.txt
#   2. bench/splat.py --peer=gsplat          -> $OUT/2_splat_pallas.md, 2_splat_tiled.md (+ logs)
#   3. gradient determinism, no XLA flags    -> $OUT/3_determinism.md
#   4. GRM base train step, bf16             -> $OUT/4_train_step.txt
# Sizes come from the environment (the defaults are the GPU run's; on a CPU, e.g.
# SKIP_WHEELS=1 SPLAT_COUNTS=2000 SPLAT_SIZE=64 TILED_COUNTS=2000 DET_COUNT=500 DET_SIZE=32
# TRAIN_CONFIG=configs/grm.py:micro runs every stage tiny, with gsplat n/a).
set -u
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
SPLAT_COUNTS=${SPLAT_COUNTS:-100000,1000000}
SPLAT_SIZE=${SPLAT_SIZE:-512}
TILED_COUNTS=${TILED_COUNTS:-100000}
DET_COUNT=${DET_COUNT:-100000}
DET_SIZE=${DET_SIZE:-512}
TRAIN_CONFIG=${TRAIN_CONFIG:-configs/grm.py:base}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-14}
export PYTHONUNBUFFERED=1
unset XLA_FLAGS  # stage 3 checks determinism without --xla_gpu_deterministic_ops
mark() { echo "=== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/progress.txt"; }

mark "stage 0: environment and wheels"
{
  if [ -n "${SKIP_WHEELS:-}" ]; then
    echo "SKIP_WHEELS set: using what is installed"
  elif ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && echo "installed: $(ls .whl/*.whl | xargs -n1 basename)"
    if ! python3 -c "import google.protobuf" 2>/dev/null && ls .whl/extra/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/extra/*.whl && echo "installed protobuf from .whl/extra"
    fi
  else
    echo "no .whl/: using what is installed"
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
  python3 --version
} > "$OUT/0_env.txt" 2>&1
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
python3 - >> "$OUT/0_env.txt" 2>&1 <<'PY'
import jax
print("jax", jax.__version__, jax.default_backend(), jax.devices())
try:
  import torch
  print("torch", torch.__version__, "cuda", torch.cuda.is_available())
except Exception as e:
  print("torch: n/a", e)
for m in ("gsplat", "grain", "ml_collections", "array_record"):
  try:
    mod = __import__(m)
    print(m, getattr(mod, "__version__", "ok"))
  except Exception as e:
    print(m, "FAILED", type(e).__name__, e)
PY
cat "$OUT/0_env.txt"

mark "stage 1: gsplat CUDA build"
timeout 300 python3 - > "$OUT/1_gsplat_build.txt" 2>&1 <<'PY'
import time
t0 = time.time()
try:
  import torch
  if not torch.cuda.is_available():
    raise RuntimeError("no CUDA")
  from gsplat.cuda._backend import _C  # JIT-compiles the CUDA extension on first import
  print("gsplat CUDA extension:", "ready" if _C is not None else "MISSING",
        f"({time.time() - t0:.0f} s)")
except Exception as e:
  print("gsplat: n/a:", type(e).__name__, e)
PY
echo "rc=$?" >> "$OUT/1_gsplat_build.txt"; cat "$OUT/1_gsplat_build.txt"

mark "stage 2a: bench/splat.py pallas vs gsplat, ${SPLAT_COUNTS} @ ${SPLAT_SIZE}^2"
timeout 240 python3 bench/splat.py --sizes "$SPLAT_SIZE" --counts "$SPLAT_COUNTS" \
  --backends pallas --peer gsplat --only-random --no-append \
  --out "$OUT/2_splat_pallas.md" > "$OUT/2_splat_pallas.log" 2>&1
echo "rc=$?" >> "$OUT/2_splat_pallas.log"; tail -20 "$OUT/2_splat_pallas.log"

mark "stage 2b: bench/splat.py tiled (reference), ${TILED_COUNTS} @ ${SPLAT_SIZE}^2"
timeout 120 python3 bench/splat.py --sizes "$SPLAT_SIZE" --counts "$TILED_COUNTS" \
  --backends tiled --peer gsplat --only-random --no-append \
  --out "$OUT/2_splat_tiled.md" > "$OUT/2_splat_tiled.log" 2>&1
echo "rc=$?" >> "$OUT/2_splat_tiled.log"; tail -8 "$OUT/2_splat_tiled.log"

mark "stage 3: gradient determinism without XLA flags"
timeout 120 python3 bench/grad_determinism.py --count "$DET_COUNT" --size "$DET_SIZE" \
  --backends pallas,tiled --out "$OUT/3_determinism.md" > "$OUT/3_determinism.log" 2>&1
echo "rc=$?" >> "$OUT/3_determinism.log"; tail -12 "$OUT/3_determinism.log"

mark "stage 4: GRM train step (${TRAIN_CONFIG}, bf16)"
timeout 240 python3 bench/train_step.py --configs "$TRAIN_CONFIG" --steps 3 \
  --batch "${TRAIN_BATCH:-8}" \
  --overrides model.dtype=bfloat16 --no-append > "$OUT/4_train_step.txt" 2>&1
echo "rc=$? (124 = timed out)" >> "$OUT/4_train_step.txt"; tail -12 "$OUT/4_train_step.txt"
mark "done"
