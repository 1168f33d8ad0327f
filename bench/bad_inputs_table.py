#!/usr/bin/env python3
"""The "Bad input" table of docs/reliability.md, measured: runs every case of
``tests/test_bad_inputs.py::test_bad_input_gets_one_clear_error_and_changes_nothing`` (the real
CLI in a subprocess, real storage servers; the test's own assertions hold for each) and prints one
Markdown row per case: its id, its exit code and the one ``error:`` line it printed, with the
case's temporary folder written ``<tmp>``, the moto port ``PORT`` and a test bucket ``BUCKET``.
A case that fails its assertions is listed at the end and the script exits 1.

Usage::

    python bench/bad_inputs_table.py                  # print the table
    python bench/bad_inputs_table.py --out table.md   # and write it to a file
    python bench/bad_inputs_table.py -k s3            # only the cases whose id matches
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
TEST = "tests/test_bad_inputs.py::test_bad_input_gets_one_clear_error_and_changes_nothing"


class Recorder:
    """A pytest plugin: the line each case printed (``<id>: exit <rc>: <line>``), in order."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, str]] = []
        self.failed: list[str] = []

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if report.when == "call":
            case_id = item.callspec.id
            if not report.passed:
                self.failed.append(case_id)
                return report
            tmp = str(item.funcargs["tmp_path"])
            for text in report.capstdout.splitlines():
                head, sep, line = text.partition(": exit ")
                if head == case_id and sep:
                    rc, _, line = line.partition(": ")
                    self.rows.append((case_id, int(rc), normalise(line, tmp)))
        return report


def normalise(line: str, tmp: str) -> str:
    """The line as the docs show it: no path, port or bucket name of one run."""
    line = line.replace(tmp, "<tmp>")
    line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line)
    return re.sub(r"kiln-(test|bad)-[0-9a-f]+", "BUCKET", line)


def cell(text: str) -> str:
    """``text`` as one Markdown code span in a table cell."""
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def table(rows: list[tuple[str, int, str]]) -> str:
    out = ["| case | exit | the error line |", "|---|---|---|"]
    previous = None
    for case_id, rc, line in rows:
        shown = "(the same line)" if line == previous else cell(line)
        out.append(f"| {case_id} | {rc} | {shown} |")
        previous = line
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, help="also write the table to this file")
    parser.add_argument("-k", default="", help="only the cases whose id matches (pytest -k)")
    args = parser.parse_args(argv)
    recorder = Recorder()
    pytest_args = ["-q", "-p", "no:cacheprovider", "--rootdir", str(REPO), str(REPO / TEST)]
    if args.k:
        pytest_args += ["-k", args.k]
    pytest.main(pytest_args, plugins=[recorder])
    text = table(recorder.rows)
    print("\n" + text, end="")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    if recorder.failed:
        print(f"failed: {', '.join(recorder.failed)}", file=sys.stderr)
        return 1
    return 0 if recorder.rows else 1


if __name__ == "__main__":
    sys.exit(main())
