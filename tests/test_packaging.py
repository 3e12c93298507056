"""Packaging: the wheel ships the library, its migrations and its weights, and the runtime needs no torch."""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
HEAVY_TRAINING = ("torch", "torchvision", "timm", "onnx", "onnxscript")


def _name(requirement: str) -> str:
    for sep in ("[", "=", ">", "<", "~", "!", ";", " "):
        requirement = requirement.split(sep, 1)[0]
    return requirement.strip().lower()


def _source_files(root: Path) -> dict[str, Path]:
    """What the wheel built from ``root`` must hold: wheel path -> source path."""
    expected: dict[str, Path] = {}
    for path in sorted((root / "sigvault").rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        rel = path.relative_to(root)
        if (
            path.suffix == ".py"
            or path.name == "py.typed"
            or (rel.parts[:2] == ("sigvault", "weights") and (path.suffix in (".onnx", ".json") or path.name == "cohort.npy"))
        ):
            expected[rel.as_posix()] = path
    for path in sorted((root / "migrations").rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        if path.suffix == ".py" or path.name == "script.py.mako":
            rel = path.relative_to(root / "migrations")
            expected[f"sigvault/_migrations/{rel.as_posix()}"] = path
    return expected


def test_runtime_needs_no_torch() -> None:
    runtime = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert not runtime & set(HEAVY_TRAINING), "torch/timm/onnx belong in the `train` extra"
    assert {"onnxruntime", "faiss-cpu", "sqlalchemy", "alembic", "numpy", "pillow", "typer"} <= runtime


def test_torch_is_pinned_exactly() -> None:
    """An unpinned torch makes pip fetch a multi-GB CUDA build."""
    train = PYPROJECT["project"]["optional-dependencies"]["train"]
    pins = {_name(r): r for r in train}
    for name in ("torch", "torchvision"):
        assert "==" in pins[name], f"{name} must be pinned with == in the train extra"


def test_console_script() -> None:
    assert PYPROJECT["project"]["scripts"] == {"sigvault": "sigvault.cli:main"}


def test_every_subpackage_is_listed() -> None:
    """setuptools is given an explicit package list: a new subpackage must be added to pyproject.toml."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {"sigvault"}
    for init in (ROOT / "sigvault").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    for init in (ROOT / "migrations").rglob("*.py"):
        found.add(".".join(("sigvault", "_migrations", *init.parent.relative_to(ROOT / "migrations").parts)))
    missing = sorted(found - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"


def test_installed_copy_finds_migrations() -> None:
    """However sigvault is installed (editable or wheel), the migrations are importable resources."""
    try:
        migrations = importlib.resources.files("sigvault._migrations")
    except ModuleNotFoundError:
        pytest.fail("sigvault._migrations is not importable: install the project (`pip install -e .`)")
    assert migrations.joinpath("env.py").is_file()
    assert migrations.joinpath("script.py.mako").is_file()
    assert migrations.joinpath("versions").is_dir()


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Build the wheel from a copy of the sources (the tree may change while it builds): (wheel, sources)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("sigvault", "migrations"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    dist = tmp / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    proc = subprocess.run(
        [*pip, "wheel", "--no-deps", "--quiet", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = dist.glob("sigvault-*.whl")
    return wheel, src


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_contents(built_wheel: tuple[Path, Path]) -> None:
    """Nothing the product needs is left out of the wheel, and nothing else goes in."""
    wheel, src = built_wheel
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        expected = _source_files(src)
        missing = sorted(set(expected) - names)
        assert not missing, f"left out of the wheel: {missing}"
        for arcname, path in expected.items():
            assert zf.read(arcname) == path.read_bytes(), arcname
        assert not any(n.startswith(("training/", "tests/", "demo-home/", "migrations/")) for n in names)
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "sigvault = sigvault.cli:main" in zf.read(entry_points).decode()
    if not any(n.startswith("sigvault/weights/") and n.endswith(".onnx") for n in names):
        pytest.skip("no sigvault/weights/*.onnx in the tree yet: the wheel is complete but has no model to ship")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_installed_wheel_works_without_the_source_tree(built_wheel: tuple[Path, Path], tmp_path: Path) -> None:
    """The wheel alone (no checkout) upgrades a database with its shipped migrations and verifies a
    signature with its shipped weights. Dependencies come from this environment."""
    wheel, _ = built_wheel
    site = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--disable-pip-version-check",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGVAULT_")}
    env |= {"PYTHONPATH": str(site), "SIGVAULT_HOME": str(tmp_path / "home")}
    work = tmp_path / "elsewhere"  # not the checkout: nothing may come from the source tree
    work.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sigvault", *args], cwd=work, env=env, capture_output=True, text=True, timeout=120
        )

    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sigvault._migrations as m, sigvault.cli as c; print(m.__file__); print(c.__file__)",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(site) for line in where.stdout.split()), where.stdout
    upgraded = run("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    if not (site / "sigvault" / "weights" / "model.onnx").is_file():
        pytest.skip("no shipped weights yet: enroll/verify from the wheel not checked")

    from sigvault.synth import SyntheticWriter

    writer = SyntheticWriter(5)
    refs = []
    for i in range(3):
        path = work / f"ref{i}.png"
        writer.genuine(i).save(path)
        refs.append(str(path))
    writer.genuine(9).save(work / "questioned.png")
    enrolled = run("enroll", "alice", *refs)
    assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
    verified = run("verify", "alice", "questioned.png", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["decision"] in ("accept", "reject", "refer")
