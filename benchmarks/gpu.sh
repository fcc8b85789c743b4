#!/usr/bin/env bash
# The GPU benchmark set in one command: full-size bf16 SAM 3 engine (cold / warm / batch of 8 /
# peak memory), the cross-request batching gain vs batch cap, and the agent throughput benchmark.
#
# Usage (from anywhere; paths are relative to the repository root):
#   benchmarks/gpu.sh OUT_DIR [STEP...]          STEP: env engine sweep throughput (default: all four)
#
# Writes into OUT_DIR:
#   environment.json   device, driver, CUDA, torch / transformers versions, the settings below
#   engine.json        python benchmarks/engine.py --size $SIZE --device $DEVICE --json
#   batch_sweep.json   python benchmarks/throughput.py ... --batch-sweep $BATCH_SWEEP --sweep-only --json
#   throughput.json    python benchmarks/throughput.py ... --latency $LATENCY --slots $SLOTS --json
#   *.log              each step's stderr
#
# Settings (environment variables, defaults in brackets):
#   SIZE [full]  DEVICE [cuda]  PYTHON [python]  WHEELS [.whl]  BATCH_SWEEP [1,2,4,8,16]
#   SAMPLES [50]  SEQUENTIAL_SAMPLES [12]  LATENCY [1.0]  SLOTS [8]  CONCURRENCY [1,4,16]
# SEQUENTIAL_SAMPLES bounds the two concurrency-1 modes (reference-style and sam3agent), whose
# samples/s is a rate and needs no more samples; at 1 s latency the reference-style mode takes
# ~11 s per sample, so all 50 would add ~7 minutes.
#
# The GPU machine has no network; torch and transformers are preinstalled there. The other runtime
# dependencies (supervision, pydantic, openai, opencv-python-headless, pycocotools, tqdm and what
# they need) are installed from the wheel folder $WHEELS when missing. Make that folder on a
# machine with network, for the GPU machine's Python version (e.g. 3.12):
#   pip download -d .whl --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       supervision pydantic openai opencv-python-headless pycocotools tqdm
# The repository is used from source (PYTHONPATH), not installed.
#
# CPU equivalent (tiny model, what CI-sized machines can run):
#   SIZE=tiny DEVICE=cpu LATENCY=0.2 SEQUENTIAL_SAMPLES=50 benchmarks/gpu.sh /tmp/bench-cpu
set -euo pipefail

usage() { echo "usage: benchmarks/gpu.sh OUT_DIR [env|engine|sweep|throughput ...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
shift
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(env engine sweep throughput)
for step in "${steps[@]}"; do
    case "$step" in env|engine|sweep|throughput) ;; *) echo "unknown step: $step" >&2; usage ;; esac
done

SIZE="${SIZE:-full}"
DEVICE="${DEVICE:-cuda}"
PYTHON="${PYTHON:-python}"
WHEELS="${WHEELS:-$root/.whl}"
BATCH_SWEEP="${BATCH_SWEEP:-1,2,4,8,16}"
SAMPLES="${SAMPLES:-50}"
SEQUENTIAL_SAMPLES="${SEQUENTIAL_SAMPLES:-12}"
LATENCY="${LATENCY:-1.0}"
SLOTS="${SLOTS:-8}"
CONCURRENCY="${CONCURRENCY:-1,4,16}"

cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error PIP_DISABLE_PIP_VERSION_CHECK=1

# --- preflight: the device, then the dependencies (installed offline from $WHEELS when missing)
if [ "$DEVICE" = cuda ]; then
    "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
'torch sees no CUDA device (torch ' + torch.__version__ + '); run on a GPU machine or set DEVICE=cpu')"
fi
missing="$("$PYTHON" - <<'EOF'
import importlib.util

needed = {"supervision": "supervision", "pydantic": "pydantic", "openai": "openai",
          "cv2": "opencv-python-headless", "pycocotools": "pycocotools", "tqdm": "tqdm"}
print(" ".join(pkg for mod, pkg in needed.items() if importlib.util.find_spec(mod) is None))
EOF
)"
if [ -n "$missing" ]; then
    if [ ! -d "$WHEELS" ]; then
        echo "missing Python packages: $missing; no wheel folder at $WHEELS (see the header of $0)" >&2
        exit 2
    fi
    echo "installing from $WHEELS: $missing" >&2
    # shellcheck disable=SC2086  # one word per package
    "$PYTHON" -m pip install --no-index --find-links "$WHEELS" $missing
fi

run_step() {  # name, then the command; stdout -> OUT/name.json, stderr -> OUT/name.log
    local name="$1"
    shift
    echo "[$(date +%H:%M:%S)] $name: $*" >&2
    local start=$SECONDS
    if ! "$@" >"$out/$name.json" 2>"$out/$name.log"; then
        echo "$name failed; last lines of $out/$name.log:" >&2
        tail -n 20 "$out/$name.log" >&2
        return 1
    fi
    echo "[$(date +%H:%M:%S)] $name done in $((SECONDS - start)) s -> $out/$name.json" >&2
}

env_json() {
    "$PYTHON" - "$SIZE" "$DEVICE" "$BATCH_SWEEP" "$SAMPLES" "$SEQUENTIAL_SAMPLES" "$LATENCY" "$SLOTS" \
        "$CONCURRENCY" <<'EOF'
import json, platform, subprocess, sys, time

import torch, transformers

keys = ["size", "device", "batch_sweep", "samples", "sequential_samples", "latency", "slots", "concurrency"]
info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(),
        "platform": platform.platform(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__, "settings": dict(zip(keys, sys.argv[1:]))}
try:
    info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    pass
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    info["gpu"] = {"name": props.name, "memory_gb": props.total_memory / 1024**3, "count": torch.cuda.device_count(),
                   "capability": f"{props.major}.{props.minor}"}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
print(json.dumps(info))
EOF
}

status=0
for step in "${steps[@]}"; do
    case "$step" in
        env) run_step environment env_json || status=1 ;;
        engine) run_step engine "$PYTHON" benchmarks/engine.py --size "$SIZE" --device "$DEVICE" --json || status=1 ;;
        sweep) run_step batch_sweep "$PYTHON" benchmarks/throughput.py --size "$SIZE" --device "$DEVICE" \
            --batch-sweep "$BATCH_SWEEP" --sweep-only --json -v || status=1 ;;
        throughput) run_step throughput "$PYTHON" benchmarks/throughput.py --size "$SIZE" --device "$DEVICE" \
            --samples "$SAMPLES" --sequential-samples "$SEQUENTIAL_SAMPLES" --latency "$LATENCY" --slots "$SLOTS" \
            --concurrency "$CONCURRENCY" --json -v || status=1 ;;
    esac
done

# --- a short summary of whatever was written
"$PYTHON" - "$out" <<'EOF' >&2 || true
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
def load(name):
    path = out / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
engine, sweep, tput = load("engine"), load("batch_sweep"), load("throughput")
if engine:
    print(f"engine {engine['size']} {engine['dtype']} on {engine['device']}: cold {engine['cold_s'] * 1000:.1f} ms, "
          f"warm {engine['warm_s'] * 1000:.1f} ms, batch8 {engine['batch8_s'] * 1000:.1f} ms, "
          f"peak {engine['peak_mem_gb']:.2f} GB")
if sweep:
    print("batching: " + ", ".join(f"B={r['max_batch']}: {r['requests_per_s']:.1f} req/s ({r['speedup_vs_first']:.2f}x)"
                                   for r in sweep["batch_sweep"]))
if tput:
    print(f"throughput: reference {tput['reference_sps']:.3f} samples/s; " + ", ".join(
        f"K={k}: {v:.3f} ({tput['ratio'][k]:.2f}x)" for k, v in tput["sps"].items())
          + f"; equal concurrency {tput['equal_concurrency_ratio']:.2f}x; ceiling {tput['ceiling_ratio']:.2f}x")
EOF
exit $status
