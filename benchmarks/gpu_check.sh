#!/usr/bin/env bash
# Every GPU item of issue 20 in ONE call (target: under 8 minutes on a fresh H200 machine), one JSON, a short
# table printed last.
#
#   bash benchmarks/gpu_check.sh                    # on the GPU machine (the device tool: run from the repo root)
#   bash benchmarks/gpu_check.sh --device cpu       # the same plumbing at tiny sizes on a CPU (a dry run, ~3 min)
#
# Sections, each under its own `timeout` so that one slow or broken section cannot lose the others' figures:
#   0. packages if the machine's transformers is older than ours (5.25; the H200 had 5.17) or datasets / accelerate are
#               missing, unpack benchmarks/wheels/site-packages-py<XY>.tar.xz (built by make_gpu_bundle.sh, not in
#               git) and put it first on PYTHONPATH; the machine's torch is used as it is.
#   1. train    bench_vgd.py: VGD-GPT2 vs plain GPT-2, gpt2-small, B16 x 1,024, bf16 autocast, eager and compiled
#               (tokens/s ratios, peak memory, graph breaks: 0 expected since issue 20).
#   2. decode   bench_vgd.py: beam 5, 20 new tokens, one timed batch of 64 AVSD-shaped prompts, projected to the
#               1,710-dialogue DSTC7 test set (no static-cache comparison: time).
#   3. extract  bench_extraction.py --device cuda with r3d_18 and with mvit_v2_s (a larger backbone); needs
#               torchvision (skipped, with the reason, where it is missing) and PyAV for the test videos.
#   4. bf16     bf16_stability.py: the demo's synthetic task, 12 x 768 scratch model, lr 5e-4, bf16, for
#               1,000 steps of the 8-epoch schedule (the diverged H200 runs went NaN by step ~900), every step's
#               losses / grad norms / activation maxima recorded. Needs `datasets` (the AVSD loader reads the demo data).
#   5. fsdp     run_vgd.py, 5 steps of the demo under `accelerate launch` with configs/accelerate/fsdp.yaml and 1
#               process; then DeepSpeed ZeRO-2 (configs/accelerate/deepspeed_zero2.yaml) if deepspeed imports or
#               installs from benchmarks/wheels. Need `datasets`.
# Packages: `bash benchmarks/make_gpu_bundle.sh` (where the registry is; Python 3.12 by default) writes the bundle
# (53 MiB for Python 3.12, pyarrow included: it fits the device tool's 64 MiB with the working tree), then run with
# carry=["benchmarks/wheels/site-packages-py312.tar.xz"] (that file only: a second bundle would not fit). A deepspeed
# wheel carried in benchmarks/wheels/ is installed for section 5 if deepspeed does not import.
# Output: $OUT (or benchmarks/gpu_check_out) holds each section's JSON / log and gpu_check.json (all of them).
set -u
cd "$(dirname "$0")/.."
DEVICE=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --device=*) DEVICE="${1#--device=}"; shift ;;
    --dry-run) DEVICE=cpu; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-$(command -v python || command -v python3)}
RESULTS=${OUT:-benchmarks/gpu_check_out}
mkdir -p "$RESULTS"
WHEELS=benchmarks/wheels
CACHE=${TMPDIR:-/tmp}/gpu_check_cache  # the demo's synthetic data and offline GPT-2, outside $RESULTS
START=$(date +%s)
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
status() { echo "[gpu_check $(( $(date +%s) - START ))s] $*"; }
# run NAME SECONDS CMD...: a section's output goes to $RESULTS/NAME.log; its exit status to $RESULTS/NAME.rc
# Every section's limit is also cut to what is left of BUDGET seconds (the whole call must fit 8 minutes on the
# device, its start-up apart); a section with under 20 s left is skipped and says so.
run() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$left" -lt 20 ]; then
    echo "skipped: no time left in the ${BUDGET}s budget" >"$RESULTS/$name.log"; status "$name: skipped, no time left"; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  status "$name (limit ${limit}s): $*"
  local t0=$(date +%s)
  timeout -k 10 "$limit" "$@" >"$RESULTS/$name.log" 2>&1
  local rc=$?
  echo "$rc $(( $(date +%s) - t0 ))" >"$RESULTS/$name.rc"
  status "$name: rc=$rc in $(( $(date +%s) - t0 ))s"; tail -n 3 "$RESULTS/$name.log" | sed 's/^/    /'
}

# ---------------------------------------------------------------- 0. wheels
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$RESULTS/gpu.txt" 2>&1
fi
# The packages the machine lacks come from benchmarks/wheels/site-packages-py<XY>.tar.xz (make_gpu_bundle.sh), unpacked
# outside $RESULTS and put first on PYTHONPATH, when its transformers is older than ours or datasets / accelerate are
# missing; the machine's torch is used as it is.
PYTAG=$($PY -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
BUNDLE=$WHEELS/site-packages-py$PYTAG.tar.xz
NEEDS=$($PY - <<'EOF'
import importlib.metadata as metadata
needs = []
try:
    if tuple(int(x) for x in metadata.version("transformers").split(".")[:2]) < (5, 25):
        needs.append(f"transformers {metadata.version('transformers')} < 5.25")
except metadata.PackageNotFoundError:
    needs.append("no transformers")
for name in ("datasets", "accelerate", "safetensors", "tokenizers"):
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        needs.append(f"no {name}")
print(", ".join(needs))
EOF
)
if [ -n "$NEEDS" ] && [ -f "$BUNDLE" ]; then
  rm -rf "$CACHE/site" && mkdir -p "$CACHE/site" && tar -C "$CACHE/site" -xJf "$BUNDLE" \
    && export PYTHONPATH="$CACHE/site${PYTHONPATH:+:$PYTHONPATH}" \
    && BUNDLE_USED="unpacked $BUNDLE ($(du -h "$BUNDLE" | cut -f1)) into $CACHE/site, first on PYTHONPATH"
fi
{
  echo "python $($PY -V 2>&1), torch $($PY -c 'import torch; print(torch.__version__)' 2>&1 | tail -n 1)"
  echo "machine lacks: ${NEEDS:-nothing}"
  if [ -n "${BUNDLE_USED:-}" ]; then echo "$BUNDLE_USED";
  elif [ -n "$NEEDS" ]; then echo "no $BUNDLE (bash benchmarks/make_gpu_bundle.sh --python ${PYTAG:0:1}.${PYTAG:1}): the machine's packages"; fi
  echo "testing with transformers $($PY -c 'import transformers; print(transformers.__version__)' 2>&1 | tail -n 1)," \
       "datasets $($PY -c 'import datasets; print(datasets.__version__)' 2>&1 | tail -n 1)," \
       "accelerate $($PY -c 'import accelerate; print(accelerate.__version__)' 2>&1 | tail -n 1)"
} >"$RESULTS/wheels.log" 2>&1
status "wheels: $(tail -n 1 "$RESULTS/wheels.log")"

if [ "$DEVICE" = cuda ]; then
  TRAIN_ARGS=(--device cuda)
  DECODE_ARGS=(--device cuda --no_compile --set gen_prompts=64 gen_batch_size=64 gen_static_cache=false gen_cached_repeats=1)
  EXTRACT_ARGS=(--device cuda --videos 8 --batch_size 32 --num_workers 4)
  BF16_ARGS=(--n_layer 12 --n_embd 768 --n_head 12 --learning_rate 5e-4 --max_steps 0 --stop_after 1000)
  RUN_ARGS=(--cache_dir "$CACHE" --max_steps 5 --do_train true --demo_n_layer 2 --demo_n_embd 128 --demo_n_head 4 --do_eval false --do_predict false)
  LIMITS=(190 60 60 150 60)
  BUDGET=${BUDGET:-465}
else  # the same plumbing at tiny sizes
  TRAIN_ARGS=(--device cpu --preset tiny --compile)
  DECODE_ARGS=(--device cpu --preset tiny --no_compile)
  EXTRACT_ARGS=(--device cpu --videos 1 --frames 16 --height 64 --width 96)
  BF16_ARGS=(--n_layer 2 --n_embd 64 --n_head 2 --learning_rate 1e-3 --max_steps 0 --stop_after 3 --num_train_epochs 1)
  RUN_ARGS=(--cache_dir "$CACHE" --max_steps 2 --do_train true --demo_n_layer 1 --demo_n_embd 32 --demo_n_head 2 --do_eval false --do_predict false --demo_num_train_dialogs 40)
  LIMITS=(300 120 120 200 200)
  BUDGET=${BUDGET:-900}
fi

# ---------------------------------------------------------------- 1. training: eager and compiled vs plain GPT-2
run train "${LIMITS[0]}" $PY benchmarks/bench_vgd.py "${TRAIN_ARGS[@]}" --skip generate data scoring padding --output_json "$RESULTS/train.json"
# ---------------------------------------------------------------- 2. beam-5 decoding, projected to the test set
run decode "${LIMITS[1]}" $PY benchmarks/bench_vgd.py "${DECODE_ARGS[@]}" --skip train data scoring padding --output_json "$RESULTS/decode.json"
# ---------------------------------------------------------------- 3. feature extraction on the device
if $PY -c "import torchvision, av" >/dev/null 2>&1; then
  run extract_r3d_18 "${LIMITS[2]}" $PY benchmarks/bench_extraction.py "${EXTRACT_ARGS[@]}" --backbone r3d_18 --output_json "$RESULTS/extract_r3d_18.json"
  if [ "$DEVICE" = cuda ]; then
    run extract_mvit_v2_s "${LIMITS[2]}" $PY benchmarks/bench_extraction.py "${EXTRACT_ARGS[@]}" --backbone mvit_v2_s --output_json "$RESULTS/extract_mvit_v2_s.json"
  fi
else
  echo "skipped: torchvision or av missing ($($PY -c 'import torchvision, av' 2>&1 | tail -n 1))" >"$RESULTS/extract_r3d_18.log"
  status "extract: $(cat "$RESULTS/extract_r3d_18.log")"
fi
# ---------------------------------------------------------------- 4. bf16 stability, 5. FSDP / DeepSpeed
if $PY -c "import datasets" >/dev/null 2>&1; then
  run bf16 "${LIMITS[3]}" $PY benchmarks/bf16_stability.py "${BF16_ARGS[@]}" --bf16 --output_dir "$RESULTS/bf16_run" --output_json "$RESULTS/bf16.json" -- --cache_dir "$CACHE"
  rm -rf "$RESULTS/bf16_run/run"  # the model (not needed; keeps $OUT small); steps.jsonl stays
  if [ "$DEVICE" = cuda ]; then
    run fsdp "${LIMITS[4]}" $PY -m accelerate.commands.launch --config_file configs/accelerate/fsdp.yaml --num_processes 1 run_vgd.py "${RUN_ARGS[@]}" --output_dir "$RESULTS/fsdp_run"
    if ! $PY -c "import deepspeed" >/dev/null 2>&1 && ls "$WHEELS"/deepspeed-*.whl >/dev/null 2>&1; then
      $PY -m pip install --no-index --find-links "$WHEELS" -q deepspeed >"$RESULTS/deepspeed_install.log" 2>&1
    fi
    if $PY -c "import deepspeed" >/dev/null 2>&1; then
      run deepspeed "${LIMITS[4]}" $PY -m accelerate.commands.launch --config_file configs/accelerate/deepspeed_zero2.yaml --num_processes 1 run_vgd.py "${RUN_ARGS[@]}" --output_dir "$RESULTS/deepspeed_run"
    else
      echo "skipped: deepspeed neither imports nor installs from $WHEELS" >"$RESULTS/deepspeed.log"
    fi
  else  # no FSDP on a CPU: the plain demo path, to check the arguments
    run fsdp "${LIMITS[4]}" $PY run_vgd.py "${RUN_ARGS[@]}" --output_dir "$RESULTS/fsdp_run"
  fi
  rm -rf "$RESULTS/fsdp_run" "$RESULTS/deepspeed_run"
else
  if [ -f "$BUNDLE" ]; then why="datasets does not import: $($PY -c 'import datasets' 2>&1 | tail -n 1)";
  else why="datasets is not installed (the AVSD loader needs it) and $BUNDLE was not carried (make_gpu_bundle.sh)"; fi
  for name in bf16 fsdp deepspeed; do echo "skipped: $why" >"$RESULTS/$name.log"; done
  status "bf16 / fsdp / deepspeed: skipped, no datasets"
fi

# ---------------------------------------------------------------- one JSON, a short table last
$PY benchmarks/gpu_check_report.py "$RESULTS" "$DEVICE" "$(( $(date +%s) - START ))"
