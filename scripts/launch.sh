#!/usr/bin/env bash
# Thin shim: ./scripts/launch.sh CIRCUITS_DIR [flags]  ==  qec-kiln launch CIRCUITS_DIR [flags]
# e.g. ./scripts/launch.sh circuits/ --decoders pymatching --max-shots 1_000_000 --max-errors 1000 --circuits-per-job 6
#      ./scripts/launch.sh circuits/ --dry-run
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
exec "$KILN_PY" -m qec_kiln launch "$@"
