# Sourced by the scripts/ shims: pick the Python that has qec_kiln installed.
# Order: $QEC_KILN_PYTHON, the repository's .venv (made by `make install`), then python3.
_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${QEC_KILN_PYTHON:-}" ]; then
  KILN_PY="$QEC_KILN_PYTHON"
elif [ -x "$_repo/.venv/bin/python" ]; then
  KILN_PY="$_repo/.venv/bin/python"
else
  KILN_PY="python3"
fi
if ! "$KILN_PY" -c "import qec_kiln" 2>/dev/null; then
  echo "error: qec_kiln is not installed for $KILN_PY; run \`make install\` in $_repo (or pip install qec-kiln)" >&2
  exit 2
fi
