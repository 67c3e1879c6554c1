#!/usr/bin/env bash
# The lowest supported transformers (pyproject: transformers>=5.17): a virtual environment on top of the installed
# packages with only transformers replaced, running the tests whose outcome depends on transformers' behaviour
# (image preprocessing conventions, processor/tokenizer round trips, runtime parity, save_pretrained checkpoints,
# what a checkpoint's config and preprocessor may hold, a vocab.json + merges.txt tokenizer's conversion).
# Usage: bash scripts/test_floor.sh [VERSION]   (default 5.17.0)
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-5.17.0}"
venv="${BT_FLOOR_VENV:-/tmp/bt-floor-transformers-$version}"
[ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "transformers==$version"
"$venv/bin/python" -c "import transformers; assert transformers.__version__ == '$version', transformers.__version__"
set +e
"$venv/bin/python" -m pytest -p no:cacheprovider -m "not slow" tests/bt_runtime/test_images.py \
    tests/bt_runtime/test_runtime.py tests/bt_runtime/test_text.py tests/bt_export/test_field_fidelity.py \
    tests/bt_export/test_checkpoints.py
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "floor tests: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
