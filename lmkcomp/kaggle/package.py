"""The offline bundle a Kaggle kernel installs the kit from.

A kernel of a code competition has no internet, so the kit arrives as an attached dataset: a
folder holding the kit's wheel, the wheels of the few dependencies Kaggle's Python image lacks
(`KAGGLE_MISSING`, each with the reason it is needed), and ``manifest.json``: every file's
name, size and sha256, the pinned requirements to install, and the install command. Everything
else the kit imports (torch, torchvision, timm, albumentations, OpenCV, numpy, pandas,
scikit-learn, scipy, pyarrow, PyYAML, tqdm, safetensors) comes with the image, so the kernel
installs with ``--no-deps`` and never replaces the image's CUDA builds.

Dependencies are fetched with ``pip download --only-binary=:all: --no-deps`` for the kernel's
Python version and platform tags (not this machine's); the kit's wheel is built from its source
checkout with ``pip wheel --no-deps --no-build-isolation --no-index`` (offline).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from lmkcomp.errors import UserInputError
from lmkcomp.fileio import atomic_write
from lmkcomp.kaggle.paths import KAGGLE_INPUT, WHEELS_DATASET

MANIFEST = "manifest.json"
#: where a kernel installs the bundle (`pip install --target`), then puts first on sys.path
KERNEL_PACKAGES = "/tmp/lmkcomp-packages"


@dataclass(frozen=True)
class BundledDependency:
    """A pip requirement the bundle carries, and why the kernel needs it."""

    requirement: str
    why: str


#: The kit's dependencies that Kaggle's Python image does not ship.
KAGGLE_MISSING: tuple[BundledDependency, ...] = (
    BundledDependency("pydegensac>=0.3.0", "spatial verification (lmkcomp.local.verify: LO-RANSAC homography, "
                      "DEGENSAC); not in Kaggle's image"),
    BundledDependency("faiss-cpu>=1.9", "the faiss search backend (lmkcomp.search.faiss_backend); not in Kaggle's "
                      "image (a GPU kernel may add faiss-gpu-cu12 with --extra)"),
)

#: the Python of Kaggle's current image
KAGGLE_PYTHON_VERSIONS: tuple[str, ...] = ("3.11",)


def manylinux_platforms(glibc_minor: int = 31, arch: str = "x86_64") -> tuple[str, ...]:
    """pip platform tags of every manylinux wheel that runs on glibc 2.`glibc_minor`, newest first.

    pip expands only the legacy aliases (manylinux2014 -> 2010 -> 1) by itself, not the
    ``manylinux_2_Y`` tags, so a download for another machine must list each of them.
    """
    perennial = tuple(f"manylinux_2_{minor}_{arch}" for minor in range(glibc_minor, 16, -1))
    return perennial + (f"manylinux2014_{arch}",)


#: Kaggle's images run Ubuntu 20.04 or newer (glibc >= 2.31), so every wheel up to manylinux_2_31 loads there
KAGGLE_PLATFORMS = manylinux_platforms()

Downloader = Callable[[Sequence[str], Path, str, Sequence[str]], None]


def _run_pip(args: Sequence[str], what: str) -> None:
    completed = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        lines = (completed.stderr or completed.stdout).strip().splitlines()
        raise UserInputError(f"{what} failed: {lines[-1] if lines else f'pip exited with {completed.returncode}'}")


def download_wheels(requirements: Sequence[str], dest: Path, python_version: str, platforms: Sequence[str]) -> None:
    """`pip download` binary wheels of `requirements` (not their dependencies) for the target into `dest`."""
    platform_args = [arg for platform in platforms for arg in ("--platform", platform)]
    _run_pip(["download", "--no-deps", "--only-binary=:all:", "--python-version", python_version, *platform_args,
              "--dest", str(dest), *requirements],
             f"pip download {' '.join(requirements)} for Python {python_version}")


def kit_source() -> Path:
    """The source checkout of the imported kit (the folder holding its pyproject.toml)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise UserInputError(f"lmkcomp is installed from a wheel ({root}), not a source checkout; pass --source DIR")
    return root


def build_kit_wheel(source: str | Path, out: str | Path) -> Path:
    """Build the kit's wheel from `source` into `out`, offline; return its path.

    The build runs on a copy of the checkout's top-level files and Python packages, so the
    checkout gets no build/ folder and a half-built tree never reaches `out`.
    """
    source, out = Path(source), Path(out)
    if not (source / "pyproject.toml").is_file():
        raise UserInputError(f"{source}: no pyproject.toml; expected the kit's source checkout")
    with tempfile.TemporaryDirectory(prefix="lmkcomp-wheel-") as workdir:
        tree, wheels = Path(workdir, "src"), Path(workdir, "wheels")
        tree.mkdir()
        for entry in source.iterdir():
            if entry.is_file():
                shutil.copy2(entry, tree / entry.name)
            elif (entry / "__init__.py").is_file():
                shutil.copytree(entry, tree / entry.name, ignore=shutil.ignore_patterns("__pycache__"))
        _run_pip(["wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(wheels), str(tree)],
                 f"building the kit's wheel from {source}")
        (built,) = wheels.glob("*.whl")
        out.mkdir(parents=True, exist_ok=True)
        return Path(shutil.move(str(built), out / built.name))


def wheel_requirement(filename: str) -> str:
    """`name==version` of a wheel file (`{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl`)."""
    name, version = filename.split("-")[:2]
    return f"{name.replace('_', '-').lower()}=={version}"


def file_entry(path: Path) -> dict:
    """Name, size in bytes and sha256 (hex) of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "size": path.stat().st_size, "sha256": digest.hexdigest()}


def install_command(requirements: Sequence[str], wheels: str = str(KAGGLE_INPUT / WHEELS_DATASET),
                    target: str = KERNEL_PACKAGES) -> str:
    """The kernel's install command: no index (offline), no dependencies (the image has them)."""
    return f"pip install --no-index --no-deps --find-links {wheels} --target {target} {' '.join(requirements)}"


def _check_replaceable(out: Path) -> None:
    """Refuse an `out` that holds anything but an earlier bundle (its manifest and listed files)."""
    if not out.exists():
        return
    manifest = out / MANIFEST
    try:
        listed = {entry["name"] for entry in json.loads(manifest.read_text())["files"]} if manifest.is_file() else set()
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserInputError(f"{manifest}: not a bundle manifest ({exc}); give a new or empty folder") from None
    strangers = sorted(p.name for p in out.iterdir() if p.name not in listed and p.name != MANIFEST)
    if strangers:
        raise UserInputError(f"{out}: holds {', '.join(strangers[:3])}, which no bundle made; give a new or empty folder")


def _write_bundle(folder: Path, dependencies: Sequence[BundledDependency], python_versions: Sequence[str],
                  platforms: Sequence[str], source: str | Path | None, download: Downloader) -> dict:
    kit = build_kit_wheel(source if source is not None else kit_source(), folder)
    if dependencies:
        for version in python_versions:
            download([dep.requirement for dep in dependencies], folder, version, platforms)
    wheels = sorted(folder.glob("*.whl"))
    requirements = [wheel_requirement(kit.name)]
    requirements += sorted({wheel_requirement(w.name) for w in wheels if w != kit} - set(requirements))
    manifest = {
        "files": [file_entry(w) for w in wheels],
        "requirements": requirements,
        "dependencies": [{"requirement": dep.requirement, "why": dep.why} for dep in dependencies],
        "python_versions": list(python_versions),
        "platforms": list(platforms),
        "install": install_command(requirements),
    }
    with atomic_write(folder / MANIFEST, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
    return manifest


def build_bundle(
    out: str | Path,
    dependencies: Sequence[BundledDependency] = KAGGLE_MISSING,
    python_versions: Sequence[str] = KAGGLE_PYTHON_VERSIONS,
    platforms: Sequence[str] = KAGGLE_PLATFORMS,
    source: str | Path | None = None,
    download: Downloader = download_wheels,
) -> dict:
    """Write the kit's wheel, the `dependencies`' wheels for each Python version, and the manifest to `out`.

    `out` must be new, empty, or an earlier bundle (which is replaced). Returns the
    manifest: ``files`` (name, size, sha256, sorted by name), ``requirements`` (the kit first,
    each pinned to the bundled version), ``dependencies`` (requirement and why), the target
    ``python_versions`` and ``platforms``, and ``install``, the command a kernel runs.
    """
    out = Path(out)
    _check_replaceable(out)
    # built beside `out` and renamed into place at the end: a failed download leaves no half bundle
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest = _write_bundle(staging, dependencies, python_versions, platforms, source, download)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        for path in out.iterdir():  # only an earlier bundle's files (checked above)
            path.unlink()
        out.rmdir()
    staging.rename(out)
    return manifest
