#!/usr/bin/env python3
"""Thin shim: ``python scripts/merge.py --bucket URL --out merged.csv`` == ``qec-kiln merge ...``."""

from _shim import run

if __name__ == "__main__":
    run("merge")
