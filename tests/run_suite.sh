#!/usr/bin/env bash
# The test suite in one command: installs what it needs into the active Python environment (this checkout in
# editable mode with the test and aot extras, then the reference DAC codec without its requirements, which would
# pull a CUDA torchaudio), then runs every test. Arguments go to pytest; --no-install skips the installs.
#   bash tests/run_suite.sh                  # install, then the whole suite
#   bash tests/run_suite.sh --no-install -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--no-install" ]; then
  shift
else
  python -m pip install -e ".[test,aot]"
  python -m pip install --no-deps descript-audio-codec==1.0.0
fi
exec python -m pytest -q tests/ "$@"
