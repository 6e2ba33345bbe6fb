#!/usr/bin/env bash
# Rebuilds requirements/lock.txt: the exact test environment, resolved in a fresh virtual environment.
#
#   bash requirements/make_lock.sh            (from the project root; about 2 minutes)
#
# The pins below are the builds the reference fixtures were made with (../shared/reference/index.json,
# "environment"): torch 2.14.1, torchvision 0.29.1 and OpenCV 5.0.0 (opencv-python-headless 5.0.0.93).
# Change them only together with fixtures made under the new builds. Everything else is whatever pip
# resolves for `-e ".[test]"` that day; tests/test_lock.py fails when the lock stops covering pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PINS=("torch==2.14.1" "torchvision==0.29.1" "opencv-python-headless==5.0.0.93")

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip
"$tmp/venv/bin/python" -m pip install -q "${PINS[@]}"
"$tmp/venv/bin/python" -m pip install -q "${PINS[@]}" -e ".[test]"
{
    echo "# The test environment, one exact version per package: pip install -c requirements/lock.txt -e \".[test]\""
    echo "# Made by: bash requirements/make_lock.sh (Python $("$tmp/venv/bin/python" -c 'import platform; print(platform.python_version(), platform.machine())'))."
    "$tmp/venv/bin/python" -m pip freeze --exclude-editable | LC_ALL=C sort -f
} > requirements/lock.txt.tmp
mv requirements/lock.txt.tmp requirements/lock.txt
echo "wrote requirements/lock.txt ($(grep -vc '^#' requirements/lock.txt) packages)"
