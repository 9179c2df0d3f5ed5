"""Plugin host: built-ins through the same hooks, the installed example vendor plugin, duplicates,
broken plugins and the autoload switch."""

import json
import os
import subprocess
import sys

import pytest

from edgec.errors import PluginError
from edgec.host import AUTOLOAD_ENV, PluginHost

HERE = os.path.dirname(__file__)


def run_cli(*args, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "edgec.cli", *args], capture_output=True, text=True, env=e)


def test_builtins_register_through_hooks():
    h = PluginHost(autoload=False)
    assert {"onnx", "torch", "edgec-ir"} <= set(h.frontends.names())
    assert "cpu" in h.targets.names() and "fold-constants" in h.passes.names()
    assert h.targets.entries["cpu"].plugin.distribution == "edgec"


def test_example_vendor_plugin_is_discovered_and_attributed():
    r = run_cli("plugins", "--json")
    assert r.returncode == 0, r.stderr
    rows = {p["name"]: p for p in json.loads(r.stdout)["plugins"]}
    acme = rows["acme-npu"]
    assert acme["distribution"] == "edgec-acme-npu" and acme["version"] == "0.2.0"
    assert acme["provides"] == ["pass:acme-count-ops", "target:acme-llm", "target:acme-npu"]
    targets = {t["name"]: t for t in json.loads(run_cli("targets", "--json").stdout)}
    assert targets["acme-npu"]["plugin"] == "edgec-acme-npu"
    assert [o["name"] for o in targets["acme-npu"]["options"]] == ["cores"]


@pytest.mark.slow
def test_compile_with_vendor_target(tiny_cnn_path, tmp_path):
    out = tmp_path / "acme"
    r = run_cli(
        "compile",
        tiny_cnn_path,
        "--target",
        "acme-npu{cores=2}",
        "-p",
        "acme-count-ops",
        "-o",
        str(out),
        "--verify",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)["manifest"]
    assert m["target"]["cores"] == 2 and m["verification"]["passed"] and m["verification"]["ran"]
    assert (out / "acme.edgec").exists()


def test_vendor_target_rejects_unsupported_ops_before_emission(tmp_path, mlp):
    from edgec import ir

    m = mlp
    g = m.graph
    g.outputs[0] = g.op("Softmax", [g.outputs[0]], {"axis": -1}, name="sm").output
    p = tmp_path / "m.edgec"
    ir.save(m, str(p))
    r = run_cli("compile", str(p), "--target", "acme-npu", "-o", str(tmp_path / "out"))
    assert r.returncode == 4
    assert "node 'sm': operator Softmax" in r.stderr
    assert not (tmp_path / "out").exists()


def test_autoload_can_be_switched_off():
    r = run_cli("plugins", "--json", env={AUTOLOAD_ENV: "1"})
    data = json.loads(r.stdout)
    assert data["autoload"] is False
    assert "acme-npu" not in {p["name"] for p in data["plugins"]}
    assert "target-cpu" in {p["name"] for p in data["plugins"]}


class _Host(PluginHost):
    def __init__(self, extra):
        self._extra = extra
        super().__init__(autoload=False)

    def _candidates(self):
        return super()._candidates() + [self._extra]


def test_duplicate_names_name_both_distributions(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(HERE, "plugins"))
    with pytest.raises(PluginError) as e:
        _Host(("dup", "dup_plugin", "edgec-dup", "9.9"))
    msg = str(e.value)
    assert "target 'cpu' is registered twice" in msg
    assert "distribution edgec 0.1.0" in msg and "distribution edgec-dup 9.9" in msg


def test_broken_plugin_names_its_distribution(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(HERE, "plugins"))
    with pytest.raises(PluginError, match="plugin 'broken' from distribution edgec-broken 1.0 failed to import"):
        _Host(("broken", "broken_plugin", "edgec-broken", "1.0"))


def test_builtin_entry_points_match_pyproject():
    """edgec.host.DEFAULT_PLUGINS (used when edgec runs without installed metadata) is pyproject's entry-point
    group, and the installed metadata agrees: three lists that must never drift apart."""
    import importlib.metadata as md
    import os
    import tomllib

    from edgec.host import DEFAULT_PLUGINS

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        declared = tomllib.load(f)["project"]["entry-points"]["edgec"]
    assert declared == DEFAULT_PLUGINS
    installed = {ep.name: ep.value for ep in md.entry_points(group="edgec") if ep.dist.name == "edgec"}
    assert installed == DEFAULT_PLUGINS


def test_the_version_has_one_source():
    import importlib.metadata as md
    import os
    import tomllib

    import edgec

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert md.version("edgec") == edgec.__version__
