"""The built wheel holds the whole package and works outside the source tree.

The tests import ``src/`` directly, so a file that ``pyproject.toml``'s package data forgets
(a preset config, the serve page, a training recipe) passes every other test and breaks only for
users who ``pip install`` the package. This builds the wheel from a copy of the sources, checks its
file list against ``src/focalcodec``, unpacks it and loads every shipped resource from there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "focalcodec"


def _package_files() -> set[str]:
    """Every file of the package in the source tree, as wheel paths (``focalcodec/...``)."""
    files = set()
    for path in PACKAGE.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.add(path.relative_to(PACKAGE.parent).as_posix())
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a clean copy of ``pyproject.toml``, ``README.md`` and ``src/``."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), "."]
    result = subprocess.run(cmd, cwd=source, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("focalcodec-*.whl")
    return built


def test_wheel_holds_every_package_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = {n for n in names if n.startswith("focalcodec/")}
    missing = sorted(_package_files() - packaged)
    assert not missing, f"in src/ but not in the wheel (add them to package-data): {missing}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "focalcodec = focalcodec.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


CHECK = """
import json, sys
from importlib import resources
from pathlib import Path
import focalcodec
from focalcodec.config import PRESETS, FocalCodecConfig
from focalcodec.eval.listen_server import PAGE
from focalcodec.serve.server import STATIC_FILES
from focalcodec.train.config import builtin_configs, load_train_config

report = {"module": focalcodec.__file__}
report["presets"] = {p: FocalCodecConfig.from_preset(p).name for p in PRESETS}
report["recipes"] = {name: sorted(load_train_config(path)) for name, path in builtin_configs().items()}
static = resources.files("focalcodec.serve").joinpath("static")
report["static"] = {n: len(static.joinpath(n).read_bytes()) for n in STATIC_FILES}
report["listen_page"] = PAGE.stat().st_size
json.dump(report, sys.stdout)
"""


def test_installed_wheel_loads_every_resource(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert Path(report["module"]).is_relative_to(site), "the check imported the source tree, not the wheel"
    from focalcodec.config import PRESETS

    assert report["presets"] == {p: p for p in PRESETS}
    shipped = {p.stem for p in (PACKAGE / "train" / "configs").glob("*.yaml")}
    assert set(report["recipes"]) == shipped and all(report["recipes"].values())
    assert all(size > 0 for size in report["static"].values()) and "index.html" in report["static"]
    assert report["listen_page"] > 0
    version = subprocess.run(
        [sys.executable, "-m", "focalcodec", "--version"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.startswith("focalcodec "), version.stderr
