#!/usr/bin/env bash
# The GPU check: the cuda-marked tests, then the GPU benchmark, as one table. Under 8 minutes on one
# H100/H200 (each part has its own time limit). Without a CUDA GPU it says why and exits 0.
#
#   bash benchmarks/gpu_check.sh                 # PYTHON=/path/to/python to choose the interpreter
#
# Exit status: 0 when every cuda test passed (or there is no GPU), 1 when one failed or timed out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
cd "$ROOT"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"

if ! reason="$("$PYTHON" -c 'import torch; print("" if torch.cuda.is_available() else f"torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees no GPU: torch.cuda.is_available() is False")' 2>&1)"; then
    reason="torch does not import with $PYTHON: ${reason##*$'\n'}"
fi
if [[ -n "$reason" ]]; then
    echo "GPU checks skipped: $reason"
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
started=$SECONDS
status=0

echo "== cuda tests (limit 240 s)"
timeout 240 "$PYTHON" -m pytest -q -n 0 -m cuda tests/test_cuda.py -rA -p no:cacheprovider \
    --junitxml="$WORK/cuda.xml" >"$WORK/tests.log" 2>&1 || status=$?
tail -n 25 "$WORK/tests.log"

echo "== GPU benchmark (limit 210 s)"
bench_status=0
timeout 210 "$PYTHON" benchmarks/bench_gpu.py >"$WORK/bench.md" 2>"$WORK/bench.err" || bench_status=$?
if [[ $bench_status -ne 0 ]]; then
    echo "GPU benchmark stopped with status $bench_status (124: time limit); its last messages:"
    tail -n 15 "$WORK/bench.err"
fi

echo
echo "## GPU check ($(date -u +%Y-%m-%dT%H:%MZ), $((SECONDS - started)) s)"
echo
"$PYTHON" - "$WORK/cuda.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

path = Path(sys.argv[1])
if not path.is_file():
    print("cuda tests: no report (pytest did not finish; see its log above)")
    sys.exit(0)
print("| cuda test | outcome | seconds |\n|---|---|---|")
for case in ElementTree.parse(path).getroot().iter("testcase"):
    outcome = "passed"
    for kind in ("failure", "error", "skipped"):
        found = case.find(kind)
        if found is not None:
            outcome = f"{kind}: {(found.get('message') or '').splitlines()[0][:120] if found.get('message') else ''}"
    print(f"| {case.get('name')} | {outcome} | {float(case.get('time', 0)):.1f} |")
EOF
echo
cat "$WORK/bench.md"
if [[ $status -ne 0 ]]; then
    echo "cuda tests: FAILED (pytest status $status; 124: time limit)"
    exit 1
fi
echo "cuda tests: passed"
