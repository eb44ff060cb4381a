#!/usr/bin/env bash
# The GPU rows of issue #19 (eager vs CUDA graphs, auto precision) and the GPU-marked tests, on one H200, in
# under 9 minutes. Every job runs under `timeout` (clipped to what is left of BUDGET seconds) with its log kept;
# after each job $OUT/summary.md (the tables), $OUT/logs.tgz and $OUT/json.tgz are rewritten, so a run that
# is cut short still returns what it measured (3 files; the device tool returns at most 8).
#
# The lead's call (the GPU machine has torch, transformers, peft but no diffusers: wheels travel in .whl/):
#   run(command="bash benchmarks/device_run.sh", carry=[".whl"], timeout_s=600)
# .whl/ holds diffusers-0.42.1, peft-0.21.2 (only installed where the image has none) and, for the tests that
# import it, open_clip_torch with ftfy and wcwidth (all py3-none-any), fetched here with the device README's
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl diffusers==0.42.1 \
#       peft==0.21.2 open_clip_torch ftfy wcwidth ninja   (ninja builds the gan/ops kernels)
# The jobs with torch.compile spend ~40-70 s compiling per shape: all jobs need more than one call's 10 minutes,
# so split them with JOBS, e.g. JOBS=pytest_common,pytest_distillation,pytest_gan,distillation then
# JOBS=ddpm_ddim,dps,distillation_compile then JOBS=dps_compile,sync (and JOBS=unet_sweep,ism_compile).
set -u
OUT=${OUT:-$PWD/device-out}
BUDGET=${BUDGET:-540}
JOBS=${JOBS:-all}  # comma-separated job names, or all
LOGS=/tmp/device_logs
JSON=/tmp/device_json
mkdir -p "$OUT" "$LOGS" "$JSON"
SUMMARY=$OUT/summary.md
START=$SECONDS
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

pack() {
    tar -C "$LOGS" -czf "$OUT/logs.tgz" . 2>/dev/null
    tar -C "$JSON" -czf "$OUT/json.tgz" . 2>/dev/null
}

job() {  # job NAME LIMIT_S CMD...: run CMD under timeout, keep its log, append its tables to the summary
    local name=$1 limit=$2 left t0 rc
    shift 2
    if [ "$JOBS" != all ] && [[ ",$JOBS," != *",$name,"* ]]; then
        return
    fi
    left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -lt 25 ]; then
        echo "## $name: skipped, ${left}s of the budget left" | tee -a "$SUMMARY"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit}s, $((SECONDS - START))s elapsed)"
    t0=$SECONDS
    timeout -k 10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    {
        echo "## $name (rc=$rc$([ $rc -eq 124 ] && echo ', TIMED OUT'), $((SECONDS - t0)) s)"
        echo '`'"$*"'`'
        echo
        if grep -qE '^\|' "$LOGS/$name.log"; then
            grep -E '^\||^(SD|[a-z-]+ UNet)' "$LOGS/$name.log"
            grep -E 'CudaGraphUNet|Warning|Error' "$LOGS/$name.log" | sort -u | head -n 8
        else
            grep -E ' (PASSED|FAILED|ERROR|SKIPPED)' "$LOGS/$name.log" | sed -E 's/ +\[ *[0-9]+%\]$//'
            tail -n 25 "$LOGS/$name.log"
        fi
        echo
    } >>"$SUMMARY"
    tail -n 2 "$LOGS/$name.log"
    pack
}

{
    echo "# device_run.sh $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader 2>&1
} >"$SUMMARY"

if ls .whl/*.whl >/dev/null 2>&1; then
    wheels=$(ls .whl/*.whl)
    if python3 -c "import peft" 2>/dev/null; then  # the image's peft matches its transformers: keep it
        wheels=$(ls .whl/*.whl | grep -v '/peft-')
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        $wheels >"$LOGS/pip.log" 2>&1 || echo "pip install of .whl failed: see logs.tgz pip.log" | tee -a "$SUMMARY"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH  # ninja for gan/ops
else
    echo "no .whl/ carried: diffusers must already be installed" | tee -a "$SUMMARY"
fi
python3 -c "import torch, diffusers, peft, click; print('torch', torch.__version__, 'diffusers', diffusers.__version__,
'peft', peft.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$SUMMARY"

PY=${PY:-python3}
# -v: a test's line is logged when it ends, so a job cut short by its timeout still says what passed
PYTEST="$PY -m pytest -v --tb=short --durations=5 -p no:cacheprovider -m gpu -rs --continue-on-collection-errors"
B=benchmarks
# 1. CUDA graphs and the compiled path equal eager; lazy checks never wait; VSD's fused call; the gan/ops kernels
#    equal their PyTorch reference (GPU-marked tests; test_compiled compiles ~10 tiny UNets, gan/ops builds ~60 s)
job pytest_common 180 $PYTEST tests/common tests/toy
job pytest_distillation 120 $PYTEST tests/distillation tests/dps tests/synchronization
job pytest_gan 150 $PYTEST tests/gan
# 2. SDS / VSD / ISM at batch 1 and 10, fp16 (auto), eager vs graphs (targets: SDS 1 <= 8 ms, 10 <= 4.5 ms per
#    prompt-step; VSD <= 3x SDS; ISM <= 2.5x SDS; peak <= 24 GB)
job distillation 150 $PY $B/bench_distillation.py --methods sds,vsd,ism --batches 1,10 --precisions auto \
    --graphs eager,graphs --steps 10 --warmup 2 --json "$JSON/distillation.json"
# 2b. where a VSD step's time goes: SDS's call, VSD's [3B] call, the LoRA fit (+ top kernels of its backward);
#     PROBE_ARGS replaces its options (e.g. PROBE_ARGS="--batches 1 --modes graphs")
job probe_vsd 150 $PY $B/probe_vsd_parts.py ${PROBE_ARGS:---batches 1,10 --profile}
# 2c. the ms-per-call curve of SD 2.1 under CUDA graphs, 1-20 rows: benchmarks/ism_call_model.py --call_ms prices
#     ISM's sequential calls with it (the ISM <= 2.5x SDS floor); ism_compile: ISM against SDS, both compiled
job unet_sweep 110 $PY $B/bench_unet_knobs.py --knobs graphs --calls 20 \
    --rows sd21:1,sd21:2,sd21:3,sd21:4,sd21:6,sd21:8,sd21:10,sd21:12,sd21:16,sd21:20 --json "$JSON/unet_sweep.json"
job ism_compile 420 $PY $B/bench_distillation.py --methods sds,ism --batches 10 --graphs graphs,compile --steps 15 \
    --warmup 25 --json "$JSON/ism_compile.json"
# 3. DDPM 1000 x 10 (<= 22 s), DDIM 50 x 10 (<= 1.2 s), DPS 1000 x 3 (<= 25 s): 100 steps timed, x10; + compile
#    (DPS compiled on its own: compiling its backward as well takes ~2 minutes)
job ddpm_ddim 150 $PY $B/bench_ddpm_dps.py --steps 100 --modes batched --precisions auto --graphs eager,graphs,compile \
    --samplers DDPM,DDIM --num_images 10 --json "$JSON/ddpm_ddim.json"
job dps 90 $PY $B/bench_ddpm_dps.py --steps 100 --modes batched --precisions auto --graphs eager,graphs \
    --samplers DPS --dps_images 3 --json "$JSON/dps.json"
job dps_compile 200 $PY $B/bench_ddpm_dps.py --samplers DPS --steps 30 --modes batched --precisions auto \
    --graphs compile --dps_images 3 --json "$JSON/dps_compile.json"
# 4. SDS under the compiled path (inductor inside CUDA graphs; the compilation is in the warm-up)
job distillation_compile 150 $PY $B/bench_distillation.py --methods sds --batches 1,10 --precisions auto \
    --graphs compile --steps 20 --warmup 2 --json "$JSON/distillation_compile.json"
# 4a. what --compile costs a second run: the same compiled SDS row twice, each in a fresh process; the second
#     finds inductor's on-disk caches (/tmp/torchinductor_$USER) warm ("warm-up s" column)
for pass in cold warm; do
    job compile_$pass 150 $PY $B/bench_distillation.py --methods sds --batches 1 --precisions auto --graphs compile \
        --steps 5 --warmup 2 --json "$JSON/compile_$pass.json"
done
# 4b. VSD's toy quality bar on the GPU: fp16 (auto, the LoRA computed in fp16 on float32 masters) and fp32
job toy_vsd_fp16 240 $PY -m distillation.measure_toy --methods vsd --n 30 --device cuda --no-timing
job toy_vsd_fp32 240 $PY -m distillation.measure_toy --methods vsd --n 30 --device cuda --no-timing \
    --set precision=fp32
# 5. wide panorama 41 views x 50 steps, decode included (<= 5 s); eager = graphs in the first GPU run
job sync 150 $PY $B/bench_sync.py --modes all --precisions auto --graphs graphs,compile --json "$JSON/sync.json"

echo "total $((SECONDS - START)) s" | tee -a "$SUMMARY"
pack
echo
cat "$SUMMARY"
