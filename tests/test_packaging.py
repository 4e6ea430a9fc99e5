"""An installed wheel carries sql/ and reports/templates/ and works outside the checkout."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("gpucost-*.whl")
    return path


def test_wheel_contains_models_and_templates(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("pipeline/_resources/sql/marts/") and n.endswith(".sql") for n in names)
    assert any(n.startswith("pipeline/_resources/templates/") for n in names)
    assert any(n.startswith("pipeline/migrations/") and n.endswith(".sql") for n in names)


def test_installed_wheel_runs_the_demo_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    # Third-party dependencies come from the test's own environment (no download needed); the
    # project itself only from the wheel.
    purelib = subprocess.run(
        [str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(purelib, "_deps.pth").write_text("\n".join(sorted(deps)) + "\n", encoding="utf-8")
    subprocess.run(
        [str(vpy), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUCOST_", "PYTHONPATH"))}
    result = subprocess.run(
        [
            str(venv / "bin" / "gpucost"),
            "demo",
            "--nights",
            "2",
            "--clusters",
            "6",
            "--db",
            "d.duckdb",
            "--out",
            "out",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = Path(result.stdout.splitlines()[-1])
    assert report == work / "out" / "index.html"
    assert report.is_file()
    # The package was imported from the venv, not from the checkout.
    where = subprocess.run(
        [str(vpy), "-c", "import pipeline; print(pipeline.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(venv) in where.stdout
