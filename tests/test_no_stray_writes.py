"""A compile writes its output directory and the compile cache, nothing else: no file in the home directory, none
left in the temporary directory.

Found by running compiles with an empty HOME: onnxruntime's telemetry (imported for ``--verify``'s comparison with
the original file, and by the tensorrt target) wrote ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,
onnxruntime.db}`` and ``$TMPDIR/.ses``; ``import openvino`` wrote ``~/intel/{openvino_ga_cid,stats}``; matplotlib
(the report's plots) wrote ``~/.cache/matplotlib`` and ``~/.config/matplotlib``. ``edgec.quiet`` turns them off."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CNN = os.path.join(ROOT, "examples", "models", "tiny_cnn.onnx")

# Settings that would hide what edgec itself does: the child must start from the user's defaults.
_CLEARED = (
    "ORT_DISABLE_TELEMETRY",
    "MPLCONFIGDIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR",
    "TVM_HOME",
    "CI",
    "TF_BUILD",
    "JENKINS_URL",
)


def _listing(d):
    return sorted(os.path.relpath(os.path.join(r, n), d) for r, ds, fs in os.walk(d) for n in ds + fs)


@pytest.mark.slow
@pytest.mark.parametrize("target,module", [("openvino", "openvino"), ("cpu", "tvm"), ("tensorrt", "onnxruntime")])
def test_compile_writes_only_output_and_cache(target, module, tmp_path):
    pytest.importorskip(module)
    box = tmp_path / "box"
    home, tmp, cache, out = box / "home", box / "tmp", box / "cache", box / "out"
    home.mkdir(parents=True)
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), EDGEC_CACHE_DIR=str(cache), TMPDIR=str(tmp))
    r = subprocess.run(
        [sys.executable, "-m", "edgec.cli", "compile", TINY_CNN, "--target", target, "--verify", "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(box),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert os.path.isfile(out / "manifest.json") and os.path.isfile(out / "report.html")
    assert os.listdir(cache), "the compile was not cached (the cache directory is where it should write)"
    stray = {
        "HOME": _listing(home),
        "TMPDIR (left behind)": _listing(tmp),
        "next to the output and cache": sorted(set(os.listdir(box)) - {"home", "tmp", "cache", "out"}),
    }
    stray = {k: v for k, v in stray.items() if v}
    assert not stray, f"{target}: files written outside the output and cache directories: {stray}"
