#!/usr/bin/env bash
# A lent GPU's checks and issue 13's GPU figures in one call: steps of 565 s in all, each with its own limit,
# the most important first (a device call that runs out of time still returns what the finished steps wrote).
#
# The GPU machine's image has CUDA torch but not this project's other packages, and reaches no index:
#   here:          python benchmarks/gpu_wheels.py          (fills the git-ignored .whl/, ~35 MiB)
#   then, once:    the device tool's run: command "bash benchmarks/gpu_session.sh", carry [".whl"], timeout_s 600
# Logs go to $OUT (the device tool's folder; runs/gpu_session elsewhere): summary.log has every step's
# command, exit status, time and the figures; <step>.log the whole output. A failing step does not stop
# the next; the script exits 1 if any failed. DEVICE=cpu PY=.venv/bin/python WHEELS=none runs the same
# steps here (slow on a CPU; a check that they start and write their figures).
set -u
OUT=${OUT:-runs/gpu_session}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
RUNS=/tmp/gpu_session_runs
rm -rf "$RUNS"  # a rerun on a warm machine must not resume the last call's runs
mkdir -p "$OUT" "$RUNS"
failed=0
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-disable}  # state tasks render nothing
WHEELS=${WHEELS:-.whl}  # WHEELS=none: use the Python environment as it is
if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi

step() {  # name limit_s command...: run it, log it, summarise it
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit} s): $*" | tee -a "$OUT/summary.log"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    [ "$rc" -eq 0 ] || failed=1
    echo "   exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.log"
    tail -n 12 "$OUT/$name.log"
}

rate() {  # metrics.csv column: the steady rate of a run into the summary
    $PY benchmarks/steady_rate.py "$1" "$2" 2>&1 | tee -a "$OUT/summary.log"
}

# (time_limit counts from a run's first update; before it, perf.compile=true probes that inductor builds: ~10-25 s
# on a fresh machine's empty caches, so each run's limit leaves that and its compile inside the step's)
# every module the steps import, so a missing package shows in the first seconds
step env 20 $PY -c "import torch, tensordict, torchrl, agent.run.online, agent.run.representation, dm_control.suite, gymnasium; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda', tensordict.__version__, torchrl.__version__)"

# updates and plans that never make the host wait for the GPU (torch's sync debug mode: a failure lists where)
step waits 90 $PY -m pytest -v -rf --tb=short -p no:cacheprovider tests/test_cuda.py -k never_wait

# online TD-MPC2 on a state DMC task, CUDA graphs: target >= 250 env steps/s on one H100
ONLINE="agent=tdmpc2 task=dmc/walker-walk device=$DEVICE data.device=$DEVICE perf.compile=true perf.compile_mode=reduce-overhead
    agent.seed_steps=1000 agent.pretrain_updates=100 agent.eval_every=1000000 agent.eval_episodes=1 time_limit=1.25
    log.progress=false log.tensorboard=false"
# shellcheck disable=SC2086
step online 150 $PY train.py $ONLINE hydra.run.dir=$RUNS/online
rate "$RUNS/online/metrics.csv" perf/env_steps_per_s

# the representation job's collection beside 10 ms of waiting per collect (1 ms per update): in this process vs workers,
# into a ring on the device storing both frames vs each frame once (obs_once, the job's)
WORKERS=${WORKERS:-8}  # the GPU machine's 16 cores; DEVICE=cpu runs here: WORKERS=1
step collection 25 $PY benchmarks/collection.py --workers 0 "$WORKERS" --gap 10 --collects 10 --storage-device "$DEVICE"

# the representation job (default config, counting), everything on the device, CUDA graphs: target >= 1,000 updates/s
# (Adam's fused kernel: ~20 fewer launches per update than the multi-tensor form, benchmarks/host_overhead.py; the
# collection in workers: in this process it alone caps the job at ~120 updates/s, benchmarks/collection.py)
REPR="task=counting device=$DEVICE data.device=$DEVICE perf.compile=true perf.compile_mode=reduce-overhead perf.fused_adam=true time_limit=1
    data.workers=$WORKERS analysis.every=0 log.progress=false log.tensorboard=false"
# shellcheck disable=SC2086
step representation 120 $PY train.py $REPR hydra.run.dir=$RUNS/representation
rate "$RUNS/representation/metrics.csv" perf/updates_per_s

# plan and update at TD-MPC2's 1M size, each switch against eager fp32 in the same run, with peak memory
step planning 70 $PY benchmarks/planning_latency.py --device "$DEVICE" --presets 1m --switches eager cudagraphs+bf16 --iters 20 --rounds 2

# the other CUDA tests (skipped on a CPU): training, resume, device-resident data, planning on the device, the
# compiled agents (TD-MPC2's with and without CUDA graphs, the representation agent's under them) against eager
# (-v: each test's outcome shows even if the step runs out of time)
step tests 90 $PY -m pytest -v -rf --tb=short -p no:cacheprovider tests/test_cuda.py -k "not never_wait"

echo "== done in $SECONDS s" | tee -a "$OUT/summary.log"
exit "$failed"
