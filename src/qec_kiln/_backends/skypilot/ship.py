"""What a cloud node installs: a wheel of the launcher's own qec-kiln, and pinned requirements.

A node must run byte-for-byte the qec-kiln that planned the sweep, whether the launcher runs an
editable clone (``pip install -e .``, or ``PYTHONPATH=src``) or an installed distribution:

- a **source tree** (``<root>/src/qec_kiln`` beside ``<root>/pyproject.toml``): its build inputs
  (``pyproject.toml``, ``README.md``, ``LICENSE``, ``src/``) are copied to a scratch folder and
  built with ``pip wheel --no-deps`` (without build isolation when this Python has
  setuptools >= 77, else pip fetches the build backend as usual);
- an **installed distribution**: the wheel is rebuilt from the files its ``RECORD`` lists, as they
  are on disk now (no build, no index).

Either way the wheel is cached under ``<kiln_home>/wheels/<content hash>/``, so a second launch of
unchanged code reuses it. The node installs it with ``pip install --no-deps`` (qec-kiln's own
dependencies include SkyPilot, which a node never runs) after :func:`node_requirements`: stim,
sinter and pymatching pinned to the launcher's versions (the detector error model text enters
sinter's strong_id), ``rich``, ``cloudpickle`` (a sweep's shipped decoder objects), the bucket's
client library and the packages of the sweep's decoders.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

from qec_kiln._backends.base import kiln_home
from qec_kiln._errors import KilnError
from qec_kiln._sweep.decoders import DECODER_DISTS, MODULE_DISTS

#: Files of a source tree that the wheel build reads (the same set docker/Dockerfile.* copies).
SOURCE_FILES = ("pyproject.toml", "README.md", "LICENSE")
#: Distributions every node needs besides qec-kiln itself, pinned to the launcher's versions
#: (pyyaml: the CLI's parser imports every backend, and the SkyPilot one reads YAML;
#: cloudpickle: loads a sweep's shipped decoder objects, pinned as it pickled them).
NODE_DISTS = ("stim", "sinter", "pymatching", "rich", "pyyaml", "cloudpickle")
#: The client library of each bucket scheme.
BUCKET_DISTS = {"s3": "boto3", "gs": "google-cloud-storage"}
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclasses.dataclass(frozen=True)
class KilnWheel:
    """A built wheel of the running qec-kiln."""

    path: Path  # <kiln_home>/wheels/<digest>/<wheel file name>
    digest: str  # content hash of the inputs (names and bytes), hex
    origin: str  # "source tree /path" or "installed distribution /path/qec_kiln-X.dist-info"
    sha256: str  # of the wheel file itself

    @property
    def remote_path(self) -> str:
        """Where the node sees the wheel (a SkyPilot ``file_mounts`` destination)."""
        return f"~/.kiln/wheel/{self.path.name}"


def package_dir() -> Path:
    """The folder of the ``qec_kiln`` package this Python imports (three folders above this
    module: qec_kiln/_backends/skypilot/ship.py)."""
    return Path(__file__).resolve().parents[2]


def source_root(pkg: Path | None = None) -> Path | None:
    """The source tree holding ``pkg`` (``<root>/src/qec_kiln``), or None for an installed package.

    >>> source_root(Path("/nowhere/site-packages/qec_kiln")) is None
    True
    """
    pkg = pkg or package_dir()
    root = pkg.parent.parent
    if pkg.parent.name == "src" and (root / "pyproject.toml").is_file():
        return root
    return None


def tree_files(root: Path) -> list[tuple[str, Path]]:
    """``(relative posix name, path)`` of a source tree's build inputs, sorted, without caches."""
    out = [(name, root / name) for name in SOURCE_FILES if (root / name).is_file()]
    for dirpath, dirnames, filenames in os.walk(root / "src"):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for f in filenames:
            if not f.endswith(_SKIP_SUFFIXES):
                p = Path(dirpath) / f
                out.append((p.relative_to(root).as_posix(), p))
    return sorted(out)


def content_digest(files: Iterable[tuple[str, Path]]) -> str:
    """SHA-256 over the names and bytes of ``files`` (order-independent), hex.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); (d / "a").write_text("x")
    1
    >>> content_digest([("a", d / "a")]) == content_digest([("a", d / "a")])
    True
    >>> content_digest([("a", d / "a")]) == content_digest([("b", d / "a")])
    False
    """
    h = hashlib.sha256()
    for name, path in sorted(files):
        data = path.read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def installed_files(pkg: Path | None = None) -> tuple[metadata.Distribution, list[tuple[str, Path]]]:
    """The installed qec-kiln distribution beside ``pkg`` and the files its RECORD lists.

    Scripts outside site-packages, byte code, and files pip writes at install time (INSTALLER,
    REQUESTED, direct_url.json, RECORD) are left out: a wheel does not carry them.
    """
    pkg = pkg or package_dir()
    site = pkg.parent
    dists = [d for d in metadata.distributions(path=[str(site)])
             if (d.metadata["Name"] or "").lower().replace("_", "-") == "qec-kiln"]
    if not dists:
        raise KilnError(
            f"{pkg}: qec-kiln is neither a source tree nor an installed distribution here; "
            "give the node a published release with --kiln-pip-spec 'qec-kiln==VERSION'"
        )
    dist = dists[0]
    skip = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}
    files = []
    for f in dist.files or []:
        name = f.as_posix()
        if name.startswith("..") or "__pycache__" in name or name.endswith(_SKIP_SUFFIXES):
            continue
        if ".dist-info/" in name and name.split("/", 1)[1] in skip:
            continue
        if name.endswith(".pth") and name.startswith("__editable__"):
            raise KilnError(
                f"{site}: qec-kiln is installed in editable mode but its source tree was not "
                "found; run from the clone, or give --kiln-pip-spec"
            )
        files.append((name, (site / name)))
    missing = [n for n, p in files if not p.is_file()]
    if missing:
        raise KilnError(f"{site}: installed qec-kiln lacks {missing[0]} (listed in its RECORD); "
                        "reinstall it, or give --kiln-pip-spec")
    return dist, sorted(files)


def build_wheel(cache: Path | None = None, *, pkg: Path | None = None,
                log=lambda _msg: None) -> KilnWheel:
    """Build (or reuse from ``cache``: ``$QEC_KILN_WHEEL_CACHE`` or ``<kiln_home>/wheels``) a
    wheel of qec-kiln."""
    env = os.environ.get("QEC_KILN_WHEEL_CACHE")
    cache = cache or (Path(env) if env else kiln_home().expanduser() / "wheels")
    pkg = pkg or package_dir()
    root = source_root(pkg)
    if root is not None:
        files = tree_files(root)
        origin = f"source tree {root}"
    else:
        dist, files = installed_files(pkg)
        origin = f"installed distribution {pkg.parent}"
    digest = content_digest(files)
    folder = cache / digest[:20]
    found = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if len(found) == 1:
        return KilnWheel(found[0], digest, origin, _file_sha256(found[0]))
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=cache) as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        if root is not None:
            log(f"building a wheel of qec-kiln from {root}")
            _pip_wheel(files, Path(tmp) / "tree", out)
        else:
            log(f"packing a wheel of the installed qec-kiln in {pkg.parent}")
            _pack_installed(dist, files, out)
        built = sorted(out.glob("*.whl"))
        if len(built) != 1:
            raise KilnError(f"building the qec-kiln wheel in {out} gave {len(built)} wheels, not 1")
        try:
            os.replace(out, folder)
        except OSError:  # another launch built it at the same time: use theirs
            if not folder.is_dir():
                raise
    wheel = folder / built[0].name
    return KilnWheel(wheel, digest, origin, _file_sha256(wheel))


def _pip_wheel(files: Sequence[tuple[str, Path]], tree: Path, out: Path) -> None:
    for name, path in files:
        dest = tree / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out)]
    if _has_modern_setuptools():
        argv.append("--no-build-isolation")
    proc = subprocess.run([*argv, str(tree)], capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise KilnError(
            f"`pip wheel` of the qec-kiln source tree failed (exit {proc.returncode}): {tail[0]}; "
            "fix the build, or give the node a published release with --kiln-pip-spec"
        )


def _has_modern_setuptools() -> bool:
    if importlib.util.find_spec("setuptools") is None or importlib.util.find_spec("wheel") is None:
        return False
    try:
        major = int(metadata.version("setuptools").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return major >= 77


def _pack_installed(dist: metadata.Distribution, files: Sequence[tuple[str, Path]], out: Path) -> None:
    """Write a wheel holding ``files`` as they are on disk, with a fresh RECORD."""
    name = dist.metadata["Name"].replace("-", "_")
    version = dist.version
    info = f"{name}-{version}.dist-info"
    wheel_text = "Wheel-Version: 1.0\nGenerator: qec-kiln\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    entries: list[tuple[str, bytes]] = []
    for rel, path in files:
        if rel == f"{info}/WHEEL":
            continue
        entries.append((rel, path.read_bytes()))
    entries.append((f"{info}/WHEEL", wheel_text.encode()))
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for rel, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([rel, f"sha256={digest}", len(data)])
    writer.writerow([f"{info}/RECORD", "", ""])
    entries.append((f"{info}/RECORD", record.getvalue().encode()))
    target = out / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel, data in entries:
            zi = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, data)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pin(dist: str) -> str:
    """``dist==<installed version>``, or the bare name when this Python lacks it.

    >>> pin("stim").startswith("stim==")
    True
    >>> pin("surely-not-installed-kiln-pkg")
    'surely-not-installed-kiln-pkg'
    """
    try:
        return f"{dist}=={metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return dist


def decoder_dists(decoders: Iterable[str], custom_module_function: str | None = None) -> list[str]:
    """Distribution names the sweep's decoders need (sinter's built-ins, or a custom module's).

    >>> decoder_dists(["pymatching", "fusion_blossom", "vacuous"])
    ['fusion-blossom', 'pymatching']
    >>> decoder_dists(["tsim"], "qec_kiln.tsim:sinter_samplers")
    ['bloqade-tsim']
    >>> decoder_dists(["chromobius"], "chromobius:sinter_decoders")
    ['chromobius']
    >>> decoder_dists(["tesseract"], "tesseract_decoder:make_tesseract_sinter_decoders_dict")
    ['tesseract-decoder']
    >>> decoder_dists(["x"], "sinter:whatever")
    ['sinter']
    """
    out = {DECODER_DISTS[d] for d in decoders if d in DECODER_DISTS}
    if custom_module_function:
        module = custom_module_function.split(":", 1)[0].strip()
        if module in MODULE_DISTS:
            out.add(MODULE_DISTS[module])
        else:
            top = module.split(".")[0]
            found = metadata.packages_distributions().get(top) or []
            if top != "qec_kiln":
                out.update(found or [top])
    return sorted(out)


def node_requirements(bucket_url: str, decoders: Iterable[str] = (),
                      custom_module_function: str | None = None) -> list[str]:
    """The pinned requirements a node installs besides qec-kiln (never SkyPilot).

    >>> reqs = node_requirements("s3://b/p", ["pymatching"])
    >>> [r.split("==")[0] for r in reqs]
    ['stim', 'sinter', 'pymatching', 'rich', 'pyyaml', 'cloudpickle', 'boto3']
    >>> any(r.startswith("skypilot") for r in node_requirements("gs://b"))
    False
    """
    dists = list(NODE_DISTS)
    scheme = bucket_url.split("://", 1)[0] if "://" in bucket_url else ""
    if scheme in BUCKET_DISTS:
        dists.append(BUCKET_DISTS[scheme])
    for d in decoder_dists(decoders, custom_module_function):
        if d not in dists:
            dists.append(d)
    return [pin(d) for d in dists if d.lower() != "skypilot"]
