#!/usr/bin/env python3
"""Thin shim: ``python scripts/partition.py CIRCUITS_DIR [flags]`` == ``qec-kiln plan ...``."""

from _shim import run

if __name__ == "__main__":
    run("plan")
