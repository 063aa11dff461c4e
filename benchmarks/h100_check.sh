#!/usr/bin/env bash
# Issue 10's GPU checks in one prepared run on a lent H100 (the device tool), so that none of
# its 15 minutes go to typing. Each part prints its figures and writes them under $OUT.
#
#   bash benchmarks/h100_check.sh ladder      # speed ladder, paper preset, 4 per GPU (≈ 4 min)
#   bash benchmarks/h100_check.sh run         # paper data set, then one full AdamW run (≤ 10 min)
#   bash benchmarks/h100_check.sh precision   # bf16 against fp32, 40 epochs each (≈ 3 min)
#   bash benchmarks/h100_check.sh all
#
# The GPU image has torch but not every dependency: carry a folder of wheels made here with
#   pip download --only-binary=:all: --python-version 3.11 -d .whl \
#       sqlalchemy alembic typer rich textual textual-plotext plotext platformdirs h5py \
#       pytorch-optimizer schedulefree prodigyopt pyyaml matplotlib
# (`.whl/` is ignored by git; name it in the run's carry).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/diffbench-check}"
mkdir -p "$out"
export DIFFBENCH_HOME="${DIFFBENCH_HOME:-$PWD/.work}"  # data and runs, ignored by git

if [ -d .whl ]; then
  python -m pip install --quiet --no-index --find-links .whl -e . 2>&1 | tail -n 3
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
  | tee -a "$out/gpu.txt"

ladder() {
  python benchmarks/speed_ladder.py --preset paper --rounds 3 --per-gpu 4 --seconds 20 \
    2>&1 | tee "$out/ladder.txt"
}

full_run() {
  diffbench data generate --preset paper 2>&1 | tail -n 2
  /usr/bin/time -v diffbench train -p paper -O adamw --device cuda --precision bf16 \
    --out "$DIFFBENCH_HOME/runs/paper-adamw" 2>"$out/run-time.txt" | tail -n 20
  grep -E "Elapsed|Maximum resident" "$out/run-time.txt"
  python - "$DIFFBENCH_HOME/runs/paper-adamw" <<'EOF' | tee "$out/run.txt"
import json, sys
from pathlib import Path
folder = Path(sys.argv[1])
events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
epochs = [json.loads(line) for line in (folder / "epochs.jsonl").read_text().splitlines()]
start = next(e for e in events if e["kind"] == "start")["provenance"]
checkpoints = [e for e in events if e["kind"] == "checkpoint"]
last = epochs[-1]
print(f"compile {start['compile_s']:.1f} s; train {last['train_s']:.1f} s; "
      f"valid {sum(e['valid_s'] for e in epochs):.1f} s; "
      f"samples {sum(e['sample_s'] for e in epochs):.1f} s; "
      f"checkpoints {len(checkpoints)}, {sum(c['seconds'] for c in checkpoints):.1f} s blocking, "
      f"{sum(c['write_s'] for c in checkpoints):.1f} s written")
print(f"final loss {last['train_loss']:.5f}, valid {last['valid_loss']:.5f}, "
      f"fixed {last['fixed_valid_loss']:.5f}")
quality = folder / "quality.json"
if quality.exists():
    print("quality", quality.read_text())
EOF
}

precision() {
  for p in fp32 bf16; do
    diffbench train -p paper -O adamw --device cuda --precision "$p" --epochs 40 \
      --out "$DIFFBENCH_HOME/runs/precision-$p" >/dev/null 2>&1
    tail -n 1 "$DIFFBENCH_HOME/runs/precision-$p/epochs.jsonl" | tee -a "$out/precision.txt"
  done
}

case "${1:-all}" in
  ladder) ladder ;;
  run) full_run ;;
  precision) precision ;;
  all) ladder; full_run; precision ;;
  *) echo "usage: $0 ladder|run|precision|all" >&2; exit 2 ;;
esac
