"""Shared by the Python shims in scripts/: run one ``qec-kiln`` subcommand with this argv."""

import os
import pathlib
import sys


def run(subcommand: str) -> None:
    try:
        from qec_kiln._command._main import main
    except ImportError:  # a Python without qec_kiln: use the repository's .venv (make install)
        venv_python = pathlib.Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
        if venv_python.exists() and pathlib.Path(sys.executable) != venv_python:
            os.execv(str(venv_python), [str(venv_python), *sys.argv])
        sys.exit("error: qec_kiln is not installed; run `make install` (or pip install qec-kiln)")
    sys.exit(main([subcommand, *sys.argv[1:]]))
