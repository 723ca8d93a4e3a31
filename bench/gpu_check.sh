#!/usr/bin/env bash
# The GPU check: on one device, (1) the tests that take a device, (2) manifests/quick.toml end to
# end (run, then report) in a temporary MLflow store, (3) bench/attack_throughput.py --quick and
# (4) bench/train_throughput.py; then one summary table. Exits 1 when a step failed (the table is
# printed either way), 2 on a usage error. Installs nothing: PYTHON must already have the suite's
# dependencies (mlflow, pydantic, fpdf2, mlxtend, pytest, ...).
#
#   PYTHON=python3 bench/gpu_check.sh            # on a GPU machine: DEVICE=cuda, ~4 minutes on an H100
#   DEVICE=cpu TINY=1 bench/gpu_check.sh         # rehearsal on a CPU box with tiny budgets
#
# Settings (environment): PYTHON (default python3), DEVICE (cuda | cpu, default cuda), TINY=1 (tiny
# budgets everywhere), TESTS=all (the whole test suite instead of `-m device`), KEEP=1 (keep the
# work folder with every step's log; it is named in the output either way).
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
TINY=${TINY:-0}
TESTS=${TESTS:-device}
case "$DEVICE" in cpu | cuda) ;; *) echo "gpu_check: DEVICE=$DEVICE: choose cuda or cpu" >&2; exit 2 ;; esac
case "$TESTS" in device | all) ;; *) echo "gpu_check: TESTS=$TESTS: choose device or all" >&2; exit 2 ;; esac
command -v "$PYTHON" >/dev/null || { echo "gpu_check: PYTHON=$PYTHON not found" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MLFLOW_DISABLE_TELEMETRY=true
SUITE=(-c 'from suite.cli import app; app()')

if [ "$TINY" = 1 ]; then
    QUICK_SET=(--set experiment.seeds=[0] --set train.epochs=2 --set data.train_samples=1000
        --set data.attack_samples=8 --set 'attacks[0].params.binary_steps=2'
        --set 'attacks[0].params.max_iterations=50')
    ATTACK_ARGS=(--quick --samples 2 --slow-samples 1 --epochs 1 --ddn-steps 20)
    TRAIN_ARGS=(--quick)
else
    QUICK_SET=()
    ATTACK_ARGS=(--quick --threads 8)
    TRAIN_ARGS=()
fi
[ "$TESTS" = all ] && TEST_SELECT=() || TEST_SELECT=(-m device)

NAMES=() CODES=() SECONDS_TAKEN=() DETAILS=()

# step NAME LOG DETAIL_FUNCTION COMMAND...: run COMMAND with its output in WORK/LOG, then record
# its exit status, wall seconds and the one-line detail DETAIL_FUNCTION reads from the log.
step() {
    local name=$1 log=$WORK/$2 detail=$3
    shift 3
    echo "== $name: $*" >&2
    local start=$SECONDS
    "$@" >"$log" 2>&1
    local code=$?
    tail -n 5 "$log" >&2
    NAMES+=("$name") CODES+=("$code") SECONDS_TAKEN+=("$((SECONDS - start))")
    DETAILS+=("$($detail "$log" 2>/dev/null | head -n 1)")
}

tests_detail() { grep -E '[0-9]+ (passed|failed|error)' "$1" | tail -n 1 | tr -d '='; }

quick_detail() {
    MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db" "$PYTHON" - <<'EOF'
from suite.tracking import Store

store = Store()
exp = store.client.get_experiment_by_name("quick")
runs = store.client.search_runs([exp.experiment_id]) if exp else []
attacked = [r for r in runs if "attack.cw-l2.success_rate" in r.data.metrics]
done = sum(r.info.status == "FINISHED" and "role" in r.data.tags for r in runs)
cells = [
    f"{r.data.tags['condition']}/{r.data.tags['seed']} "
    f"{r.data.metrics['attack.cw-l2.success_rate']:.0%} L2 {r.data.metrics['attack.cw-l2.median_l2']:.3f}"
    for r in sorted(attacked, key=lambda r: (r.data.tags["condition"], r.data.tags["seed"]))
]
print(f"{done} models finished; C&W " + ", ".join(cells))
EOF
}

attack_detail() {
    "$PYTHON" - "$1" <<'EOF'
import json, sys

text = open(sys.argv[1]).read()
doc, _ = json.JSONDecoder().raw_decode(text[text.index("{\n"):])
cw = next(r for r in doc["runs"] if r["name"] == "cw-l2 5x1000")
ok = sum(doc["checks"].values())
print(f"cw-l2 5x1000 on {cw['samples']}: {cw['wall_s']:.1f} s wall, {cw['grad_evals_mean']:.0f} "
      f"evals/digit, {cw['success_rate']:.0%}, median L2 {cw['median_l2']:.3f}; "
      f"checks {ok}/{len(doc['checks'])} pass")
EOF
}

train_detail() {
    "$PYTHON" - "$1" <<'EOF'
import json, sys

text = open(sys.argv[1]).read()
doc, _ = json.JSONDecoder().raw_decode(text[text.index("{\n"):])
print(f"fit {doc['suite_samples_per_s']:.0f} samples/s, raw loop {doc['raw_samples_per_s']:.0f}, "
      f"ratio {doc['ratio']:.3f} (goal >= 0.9)")
EOF
}

quick_run_and_report() {
    MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db" "$PYTHON" "${SUITE[@]}" run manifests/quick.toml \
        --set "experiment.device=$DEVICE" "${QUICK_SET[@]}" &&
        MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db" "$PYTHON" "${SUITE[@]}" report quick \
            --out "$WORK/report"
}

step "tests ($TESTS) on $DEVICE" tests.log tests_detail \
    env SUITE_TEST_DEVICE="$DEVICE" OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" \
    "$PYTHON" -m pytest -q -p no:cacheprovider "${TEST_SELECT[@]}"
step "quick.toml run+report" quick.log quick_detail quick_run_and_report
step "attack_throughput" attack.log attack_detail \
    "$PYTHON" bench/attack_throughput.py --device "$DEVICE" --cache "$WORK/cache" "${ATTACK_ARGS[@]}"
step "train_throughput" train.log train_detail \
    "$PYTHON" bench/train_throughput.py --device "$DEVICE" "${TRAIN_ARGS[@]}"

failed=0
for code in "${CODES[@]}"; do [ "$code" = 0 ] || failed=1; done
logs="logs kept in $WORK"
if [ "${KEEP:-0}" != 1 ] && [ "$failed" = 0 ]; then rm -rf "$WORK" && logs="logs removed (KEEP=1 keeps them)"; fi
echo
"$PYTHON" -c "import torch; d = torch.cuda.get_device_name() if '$DEVICE' == 'cuda' else 'cpu'; \
print(f'gpu_check on $DEVICE ({d}), torch {torch.__version__}; $logs')" 2>/dev/null ||
    echo "gpu_check on $DEVICE; $logs"
printf '%-26s %-6s %6s  %s\n' step result sec detail
for i in "${!NAMES[@]}"; do
    [ "${CODES[$i]}" = 0 ] && result=ok || result="FAIL(${CODES[$i]})"
    printf '%-26s %-6s %6s  %s\n' "${NAMES[$i]}" "$result" "${SECONDS_TAKEN[$i]}" "${DETAILS[$i]}"
done
exit "$failed"
