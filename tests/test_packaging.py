"""What the Makefile, README and pyproject promise: the demo's plot command, the demo's light install,
and SkyPilot as an optional extra with one clear error line when it is missing."""

from __future__ import annotations

import re
import subprocess
import sys

import matplotlib
import pytest
import sinter
from kiln_helpers import REPO

matplotlib.use("Agg")


def _group_funcs() -> dict[str, str]:
    """The ``--group_func`` expression of every ``sinter plot`` command in the Makefile and docs."""
    found = {}
    for path in [REPO / "Makefile", REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for expr in re.findall(r'sinter plot .*?--group_func "([^"]+)"', path.read_text()):
            found[f"{path.name}: {expr}"] = expr
    return found


def _legend(group_func: str) -> list[str]:
    """The legend labels ``sinter plot --group_func GROUP_FUNC`` draws, in order."""
    import matplotlib.pyplot as plt
    from sinter._command._main_plot import _FieldToMetadataWrapper

    func = eval(compile(f"lambda *, stat, decoder, metadata, m, strong_id: {group_func}", "g", "eval"))
    stats = [sinter.TaskStats(strong_id=f"{d}-{p}", decoder="pymatching", json_metadata={"d": d, "p": p},
                              shots=1000, errors=10) for d in (3, 11, 5, 13, 7) for p in (0.001, 0.01)]
    fig, ax = plt.subplots()
    sinter.plot_error_rate(
        ax=ax, stats=stats, x_func=lambda s: s.json_metadata["p"],
        group_func=lambda s: func(stat=s, decoder=s.decoder, metadata=s.json_metadata,
                                  m=_FieldToMetadataWrapper(s.json_metadata), strong_id=s.strong_id))
    labels = ax.get_legend_handles_labels()[1]
    plt.close(fig)
    return labels


def test_plot_commands_order_the_legend_by_distance():
    funcs = _group_funcs()
    assert any(k.startswith("Makefile") for k in funcs) and any(k.startswith("README") for k in funcs)
    for where, expr in funcs.items():
        assert _legend(expr) == ["d=3", "d=5", "d=7", "d=11", "d=13"], where


def _recipe(target: str) -> tuple[str, str]:
    """(prerequisites, recipe) of a Makefile target."""
    text = (REPO / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:([^\n]*)\n((?:\t[^\n]*\n)*)", text, re.MULTILINE)
    assert match, f"no target {target} in the Makefile"
    return match.group(1), match.group(2)


def test_demo_installs_no_extras_and_test_adds_the_test_extra():
    demo_prereqs, _ = _recipe("demo")
    [stamp] = [p for p in demo_prereqs.split() if "STAMP" in p]
    _, demo_install = _recipe(stamp)
    assert "$(PIP) -e .\n" in demo_install and "[" not in demo_install  # $(PIP): tests/test_lock.py
    test_prereqs, _ = _recipe("test")
    lint_prereqs, _ = _recipe("lint")  # `test` runs `lint` (ruff, mypy) beside the suite
    [test_stamp] = [p for p in (test_prereqs + " " + lint_prereqs).split() if "STAMP" in p]
    assert test_stamp != stamp, "the test extra needs its own stamp file"
    _, test_install = _recipe(test_stamp)
    assert "-e '.[test]'" in test_install


def test_skypilot_is_an_optional_extra_that_the_tests_install():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("skypilot") for d in project["dependencies"])
    extras = project["optional-dependencies"]
    assert any(d.startswith("skypilot") for d in extras["skypilot"])
    assert any(d.startswith("skypilot") for d in extras["test"])
    readme = (REPO / "README.md").read_text()
    assert "qec-kiln[skypilot]" in readme


@pytest.mark.slow
@pytest.mark.parametrize("args", [["launch", "--dry-run"], ["launch"]])
def test_skypilot_backend_without_sky_says_how_to_install_it(tmp_path, small_circuits, args):
    """With SkyPilot absent (``import sky`` fails), --backend skypilot gives one error line."""
    code = ("import sys; sys.modules['sky'] = None\n"  # what a missing package looks like to import
            "from qec_kiln._command._main import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run(
        [sys.executable, "-c", code, *args, str(small_circuits), "--backend", "skypilot",
         "--bucket", "s3://no-such-bucket-needed", "--max-shots", "100", "--max-errors", "10"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and "pip install 'qec-kiln[skypilot]'" in errors[0], proc.stderr


def test_the_repository_root_holds_only_the_project_layout():
    """Nothing a command wrote (a merged CSV named ``None``, a plot) is committed at the root."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    top = {path.split("/")[0] for path in tracked}
    layout = {".ci", ".gitattributes", ".github", ".gitignore", "CHANGELOG.md",
              "CODE_OF_CONDUCT.md", "CONTRIBUTING.md", "LICENSE", "Makefile", "README.md",
              "SECURITY.md", "bench", "configs", "constraints.txt", "docker", "docs", "examples",
              "pyproject.toml",
              "scripts", "src", "tests"}
    assert top - layout == set()


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").iterdir()))
def test_each_config_is_a_link_to_its_one_source_the_packaged_template(name):
    """configs/ holds no copy: each file links to the template the wheel ships (edit that one)."""
    path = REPO / "configs" / name
    assert path.is_symlink(), f"run: ln -sf ../src/qec_kiln/data/{name} configs/{name}"
    assert path.resolve() == (REPO / "src" / "qec_kiln" / "data" / name).resolve()
