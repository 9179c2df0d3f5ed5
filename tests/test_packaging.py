"""The built wheel installs into a fresh virtual environment, imports only under edgec.*, and runs."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_wheel_in_fresh_venv(tmp_path):
    pytest.importorskip("build")
    r = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), ROOT],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("edgec-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "edgec/ir/core.py" in names and "edgec/targets/cpu/__init__.py" in names
    assert not any(n.startswith(("ir/", "plugins/", "targets/")) for n in names)
    venv = tmp_path / "venv"
    # System site-packages provide the heavy dependencies (no network needed); edgec comes from the wheel.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], check=True)
    out = subprocess.run([str(venv / "bin" / "edgec"), "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and "0.1.0" in out.stdout
    probe = (
        "import edgec.ir, edgec.plugins.cleanup, edgec.targets.cpu, importlib.util, edgec;"
        "print(edgec.__file__);"
        "print([m for m in ('ir','plugins','targets') if importlib.util.find_spec(m)])"
    )
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    file_line, claimed = out.stdout.strip().splitlines()
    assert str(venv) in file_line  # the wheel, not the editable checkout
    assert claimed == "[]"
