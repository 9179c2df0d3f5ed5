"""A crafted ``.pt2`` never runs code in edgec.

``torch.export.load`` picks its loader from what the archive says, so a pickled payload placed in a payload
config (``use_pickle``, a ``path_name`` like ``opaque_obj_0/x``), a legacy ``.pt`` file or the sample inputs
runs when torch loads it, and the program JSON reaches ``sympy.sympify`` (eval), getattr-resolved callables,
``importlib`` (pytree enum contexts) and ``exec`` (guards). edgec parses the archive itself: every such
archive must end in a BadInputError (exit code 3 from the CLI, no traceback) and the payload's marker file
must never appear. Normal ``torch.export.save`` archives still load, tensors identical to torch's loader.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import edgec  # noqa: E402
from edgec.errors import BadInputError  # noqa: E402
from edgec.plugins.frontends.torch import TorchFrontend, _Pt2Reader, load_pt2  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)
        self.register_buffer("b", torch.ones(2))
        self.c = torch.arange(2.0)  # a tensor constant: the constants config has an entry

    def forward(self, x):
        return self.fc(x) + self.b + self.c


class CNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 4)
        self.fc.weight = torch.nn.Parameter(self.fc.weight.t().contiguous().t())  # non-contiguous
        self.register_buffer("k", torch.arange(12.0).reshape(3, 4)[:, 1:3])  # a view with an offset

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3))) + self.k.sum()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("pt2")
    torch.manual_seed(0)
    torch.export.save(torch.export.export(Net().eval(), (torch.randn(3, 4),)), str(d / "n.pt2"))
    torch.export.save(torch.export.export(CNN().eval(), (torch.randn(2, 3, 8, 8),)), str(d / "cnn.pt2"))
    return d


# -- payloads ---------------------------------------------------------------------------------------------


class SystemPayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class OpenPayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def _torch_save_zip(pkl: bytes) -> bytes:
    """A torch.save-style zip whose data.pkl is ``pkl``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


# -- archive surgery --------------------------------------------------------------------------------------


def _read(path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        root = names[0].split("/")[0]
        return root, {n[len(root) + 1 :]: z.read(n) for n in names}


def _write(path, root, files, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        for rel, data in files.items():
            z.writestr(rel[2:] if rel.startswith("//") else f"{root}/{rel}", data)  # "//x": outside the root
    return str(path)


def _edit_json(files, rel, fn):
    d = json.loads(files[rel])
    fn(d)
    files[rel] = json.dumps(d).encode()


W = "data/weights/model_weights_config.json"
TENSOR_META = {
    "dtype": 7,
    "sizes": [{"as_int": 2}],
    "requires_grad": False,
    "device": {"type": "cpu", "index": None},
    "strides": [{"as_int": 1}],
    "storage_offset": {"as_int": 0},
    "layout": 7,
}
C = "data/constants/model_constants_config.json"
M = "models/model.json"


def weights_use_pickle(files, p):
    def fn(d):
        d["config"]["fc.weight"]["use_pickle"] = True
        files["data/weights/" + d["config"]["fc.weight"]["path_name"]] = p

    _edit_json(files, W, fn)


def weights_path(name):
    def place(files, p):
        _edit_json(files, W, lambda d: d["config"]["fc.weight"].update(path_name=name))
        files["data/weights/" + name] = p

    place.__name__ = f"weights_path({name})"
    return place


def constants_entry(name, use_pickle, meta):
    def place(files, p):
        def fn(d):
            tm = TENSOR_META if meta else None
            d["config"]["evil"] = {"path_name": name, "is_param": False, "use_pickle": use_pickle, "tensor_meta": tm}

        _edit_json(files, C, fn)
        files["data/constants/" + name] = p

    place.__name__ = f"constants_entry({name}, {use_pickle}, {meta})"
    return place


def constants_repoint(name):
    def place(files, p):
        _edit_json(files, C, lambda d: d["config"]["c"].update(path_name=name))
        files["data/constants/" + name] = p

    place.__name__ = f"constants_repoint({name})"
    return place


def config_only(config, name, use_pickle=False):
    """Only the config changes: the path_name points at an existing raw file, or at nothing."""

    def place(files, p):
        def fn(d):
            meta = next(iter(d["config"].values()), None) or {"tensor_meta": TENSOR_META}
            d["config"]["evil"] = {**meta, "path_name": name, "use_pickle": use_pickle}

        _edit_json(files, config, fn)

    place.__name__ = f"config_only({config.split('/')[1]}, {name}, {use_pickle})"
    return place


def entry(rel, wrap=False):
    def place(files, p):
        files[rel] = _torch_save_zip(p) if wrap else p

    place.__name__ = f"entry({rel}, {wrap})"
    return place


POSITIONS = [
    weights_use_pickle,
    weights_path("opaque_obj_0"),
    weights_path("custom_obj_0"),
    weights_path("sub/weight_0"),
    weights_path("../constants/tensor_9"),
    weights_path("weight_0/../../evil"),
    weights_path("a/opaque_obj_1"),
    weights_path("model.pt"),
    constants_entry("opaque_obj_0/x", True, False),
    constants_entry("a/opaque_obj_1", True, False),
    constants_entry("custom_obj_0", True, False),
    constants_entry("opaque_obj_3", False, True),
    constants_entry("tensor_9", True, True),
    constants_entry("tensor_9/custom_obj_0", False, True),
    constants_entry("../weights/evil", False, True),
    constants_entry("sub/dir/tensor_1", False, True),
    constants_repoint("opaque_obj_0"),
    constants_repoint("custom_obj_2/../tensor_0"),
    config_only(W, "weight_0", True),
    config_only(C, "opaque_obj_0/x"),
    config_only(C, "a/opaque_obj_1"),
    config_only(C, "custom_obj_0"),
    config_only(W, "../constants/tensor_0"),
    config_only(W, "weight_0/"),
    config_only(W, "./weight_0"),
    config_only(C, "tensor_0/../tensor_0"),
    config_only(W, "../../archive_format"),
    config_only(C, "tensor_0", True),
    config_only(W, "data/weights/weight_0"),
    config_only(C, "/tensor_0"),
    entry("data/weights/model.pt"),
    entry("data/constants/model.pt"),
    entry("data/weights/model.pt", True),
    entry("data/constants/custom_obj_0"),
    entry("data/constants/opaque_obj_0"),
    entry("data/sample_inputs/model.pt"),
    entry("data/sample_inputs/model.pt", True),
    entry("extra/notes.txt"),
    entry("extra/module_info.json"),
    entry("extra/a/b/evil"),
    entry("data/aotinductor/model/model.wrapper.so"),
    entry("data/aotinductor/model/weights/w.pt", True),
    entry("data/executorch/model.pte"),
    entry("xl_model_weights/model_param_config"),
    entry("data/mtia/x"),
    entry("data/weights/sub/weight_0"),
    entry("data/weights/weight_99"),
    entry("data/constants/tensor_99"),
    entry("models/nested/model.json"),
    entry("evil.pkl"),
    entry("a/b/c/d"),
    entry("../evil"),
    entry("data/../evil"),
    entry("//evil.pkl"),
    entry("//other/archive_format"),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    position=st.sampled_from(POSITIONS),
    kind=st.sampled_from([SystemPayload, OpenPayload]),
    protocol=st.integers(0, pickle.HIGHEST_PROTOCOL),
    compress=st.booleans(),
    good=st.sampled_from(["n.pt2", "cnn.pt2"]),
)
def test_pickled_payload_anywhere_is_refused_and_never_runs(work, position, kind, protocol, compress, good):
    marker = work / "PWNED"
    root, files = _read(work / good)
    if good == "cnn.pt2" and position.__name__.startswith("constants_repoint"):
        return  # the CNN has no tensor constant to repoint
    position(files, pickle.dumps(kind(marker), protocol=protocol))
    evil = _write(work / "evil.pt2", root, files, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
    with pytest.raises(BadInputError) as e:
        TorchFrontend().load(evil)
    assert not marker.exists(), position.__name__
    assert "Traceback" not in str(e.value)


def test_torch_itself_would_run_these_payloads(work, monkeypatch):
    """The archives above are live: plain torch.export.load runs their payloads, weights-only or not."""
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    ran = []
    expr = sym_expr("__import__('os').system(\"touch '{m}'\")")
    positions = [
        constants_entry("opaque_obj_0/x", True, False),
        weights_use_pickle,
        lambda files, p: _edit_json(files, M, lambda d: expr(d, marker)),
    ]
    for i, position in enumerate(positions):
        marker = work / f"TORCH_RAN_{i}"
        root, files = _read(work / "n.pt2")
        position(files, pickle.dumps(SystemPayload(marker)))
        evil = _write(work / f"torch_{i}.pt2", root, files)
        try:
            torch.export.load(evil)
        except Exception:  # noqa: BLE001 - torch may fail after the payload ran
            pass
        ran.append(marker.exists())
        with pytest.raises(BadInputError, match="never unpickles" if i < 2 else "torch would eval"):
            load_pt2(evil)
    if not any(ran):
        pytest.skip("this torch no longer unpickles these payloads")


# -- the program JSON -------------------------------------------------------------------------------------


def _graph(d):
    return d["graph_module"]["graph"]


def sym_expr(expr):
    def edit(d, marker):
        _graph(d)["tensor_values"]["x"]["sizes"][0] = {
            "as_expr": {"expr_str": expr.format(m=marker), "hint": {"as_int": 3}}
        }

    edit.__name__ = f"sym_expr({expr[:30]})"
    return edit


def node_target(target):
    def edit(d, marker):
        _graph(d)["nodes"].insert(
            0,
            {
                "target": target,
                "name": "evil",
                "metadata": {},
                "outputs": [],
                "inputs": [{"name": "command", "kind": 1, "arg": {"as_string": f"touch '{marker}'"}}],
            },
        )

    edit.__name__ = f"node_target({target})"
    return edit


def operator_argument(d, marker):
    node = _graph(d)["nodes"][0]
    node["inputs"].append({"name": "op", "kind": 1, "arg": {"as_operator": "torch.os.system"}})


def treespec(context):
    def edit(d, marker):
        sig = d["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(sig["in_spec"])
        spec[1]["children_spec"][1] = context
        sig["in_spec"] = json.dumps(spec)

    edit.__name__ = f"treespec({str(context)[:40]})"
    return edit


def custom_object_input(d, marker):
    d["graph_module"]["signature"]["input_specs"].insert(
        0,
        {
            "custom_obj": {
                "arg": {"name": "obj", "class_fqn": "__torch__.torch.classes.evil.Evil"},
                "custom_obj_name": "obj",
            }
        },
    )


def custom_object_value(d, marker):
    _graph(d)["custom_obj_values"] = {"obj": {"name": "obj", "class_fqn": "__torch__.x"}}


def huge_hint(d, marker):
    _graph(d)["tensor_values"]["x"]["sizes"][0] = {
        "as_expr": {"expr_str": "Symbol('s0', integer=True)", "hint": {"as_int": 10**40}}
    }


def forward_arg_names(d, marker):
    d["graph_module"]["module_call_graph"][0]["signature"]["forward_arg_names"] = [
        f"x: getattr(__import__('os'), 'system')(\"touch '{marker}'\")"
    ]


def graph_argument_name(d, marker):
    empty = {"inputs": [], "outputs": [], "nodes": [], "tensor_values": {}, "sym_int_values": {}, "sym_bool_values": {}}
    _graph(d)["nodes"][0]["inputs"].append(
        {
            "name": "g",
            "kind": 1,
            "arg": {
                "as_graph": {"name": f"g\"),getattr(__import__('os'),'system')(\"touch {marker}\"),(\"", "graph": empty}
            },
        }
    )


def parameter_name(d, marker):
    spec = d["graph_module"]["signature"]["input_specs"][0]["parameter"]
    spec["parameter_name"] = f"fc.w\"),getattr(__import__('os'),'system')(\"touch {marker}\"),(\""


def node_name(d, marker):
    _graph(d)["nodes"][0]["name"] = f"y = __import__('os').system(\"touch '{marker}'\")"


ENUM = {"__enum__": True, "fqn": "os:environ", "name": "HOME"}
PROGRAM_EDITS = [
    sym_expr("__import__('os').system(\"touch '{m}'\")"),
    sym_expr("eval(chr(95)+chr(95))"),
    sym_expr("Symbol('s0').__class__"),
    sym_expr("Symbol('s0', integer=__import__('os').system(\"touch '{m}'\"))"),
    sym_expr("Float('1e999999999')"),
    sym_expr("Pow(Integer(9), Pow(Integer(9), Integer(9)))"),
    sym_expr("Integer(9)**Integer(99999)"),
    sym_expr("(lambda: 1)()"),
    sym_expr("ｅｖａｌ(chr(95))"),
    sym_expr("open"),
    node_target("torch.os.system"),
    node_target("torch.ops.load_library"),
    node_target("torch.save"),
    node_target("torch.ops.aten.save.default"),
    node_target("torch.ops.aten.from_file.default"),
    node_target("torch.ops.higher_order.aoti_call_delegate"),
    node_target("builtins.exec"),
    node_target("#evil:op"),
    node_target("math.__loader__.load_module"),
    node_target("_operator.methodcaller"),
    operator_argument,
    treespec({"type": "builtins.dict", "context": json.dumps([ENUM]), "children_spec": []}),
    treespec({"type": "builtins.dict", "context": json.dumps([{"a": [ENUM]}]), "children_spec": []}),
    treespec(
        {
            "type": "collections.defaultdict",
            "context": {"default_factory_module": "os", "default_factory_name": "system", "dict_context": []},
            "children_spec": [],
        }
    ),
    custom_object_input,
    custom_object_value,
    huge_hint,
    forward_arg_names,
    graph_argument_name,
    parameter_name,
    node_name,
]


@pytest.mark.parametrize("edit", PROGRAM_EDITS, ids=lambda e: e.__name__)
def test_program_strings_never_reach_eval_import_or_calls(work, edit):
    marker = work / "PROGRAM_RAN"
    root, files = _read(work / "n.pt2")
    _edit_json(files, M, lambda d: edit(d, marker))
    evil = _write(work / "program.pt2", root, files)
    with pytest.raises(BadInputError):
        TorchFrontend().load(evil)
    assert not marker.exists()


def test_guards_code_is_dropped_not_executed(work):
    marker = work / "GUARD_RAN"
    root, files = _read(work / "n.pt2")
    _edit_json(files, M, lambda d: d.update(guards_code=[f"__import__('os').system(\"touch '{marker}'\") == 0"]))
    path = _write(work / "guards.pt2", root, files)
    ep = load_pt2(path)
    assert ep._guards_code == [] and ep.example_inputs is None
    ep.module()(torch.randn(3, 4))
    assert TorchFrontend().load(path).graph.outputs
    assert not marker.exists()


def test_the_unpickling_guard_catches_a_missed_path(work):
    """Belt and braces: if torch's deserializer were handed pickled bytes, torch.load refuses."""
    marker = work / "GUARD_PICKLE"
    reader = _Pt2Reader(str(work / "n.pt2"))
    program = reader.program("models/model.json")
    with pytest.raises(BadInputError, match="never unpickles"):
        reader.deserialize(program, pickle.dumps(SystemPayload(marker)), {})
    assert not marker.exists()
    assert torch.load is not None and pickle.loads(pickle.dumps(3)) == 3  # restored afterwards


# -- payload configs that lie -----------------------------------------------------------------------------


def _meta(d, key="fc.weight"):
    return d["config"][key]["tensor_meta"]


LIES = {
    "no tensor_meta": lambda d: d["config"]["fc.weight"].update(tensor_meta=None),
    "sizes larger than the bytes": lambda d: _meta(d).update(sizes=[{"as_int": 200}, {"as_int": 4}]),
    "strides past the end": lambda d: _meta(d).update(strides=[{"as_int": 400}, {"as_int": 1}]),
    "offset past the end": lambda d: _meta(d).update(storage_offset={"as_int": 7}),
    "terabytes": lambda d: _meta(d).update(sizes=[{"as_int": 1 << 40}, {"as_int": 1 << 20}]),
    "zero stride terabytes": lambda d: _meta(d).update(
        sizes=[{"as_int": 1 << 42}, {"as_int": 4}], strides=[{"as_int": 0}, {"as_int": 1}]
    ),
    "negative size": lambda d: _meta(d).update(sizes=[{"as_int": -2}, {"as_int": 4}]),
    "symbolic size": lambda d: _meta(d).update(sizes=[{"as_expr": {"expr_str": "s0"}}, {"as_int": 4}]),
    "rank mismatch": lambda d: _meta(d).update(strides=[{"as_int": 1}]),
    "unknown dtype": lambda d: _meta(d).update(dtype=999),
    "wider dtype": lambda d: _meta(d).update(dtype=8),  # float64: twice the bytes the file holds
    "sparse layout": lambda d: _meta(d).update(layout=1),
    "missing record": lambda d: d["config"]["fc.weight"].update(path_name="weight_77"),
    "no path_name": lambda d: d["config"]["fc.weight"].pop("path_name"),
    "use_pickle string": lambda d: d["config"]["fc.weight"].update(use_pickle="false"),
    "config not a mapping": lambda d: d.update(config=[1, 2]),
    "quoted key": lambda d: d["config"].update({'fc"),print("x': d["config"].pop("fc.weight")}),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_lying_payload_configs_are_bad_input(work, lie):
    root, files = _read(work / "n.pt2")
    _edit_json(files, W, LIES[lie])
    with pytest.raises(BadInputError):
        load_pt2(_write(work / "liar.pt2", root, files))


def test_weight_file_over_the_limit_is_refused_before_reading(work, monkeypatch):
    root, files = _read(work / "n.pt2")
    n = 1 << 20

    def fn(d):
        _meta(d).update(sizes=[{"as_int": n}, {"as_int": 4}], strides=[{"as_int": 4}, {"as_int": 1}])
        files["data/weights/" + d["config"]["fc.weight"]["path_name"]] = bytes(16 * n)  # 16 MiB of zeros

    _edit_json(files, W, fn)
    path = _write(work / "bomb.pt2", root, files, zipfile.ZIP_DEFLATED)
    monkeypatch.setenv("EDGEC_MAX_TENSOR_BYTES", str(1 << 20))
    with pytest.raises(BadInputError, match="per-tensor limit"):
        load_pt2(path)


@pytest.mark.parametrize(
    "damage",
    [
        "duplicate entry",
        "no archive_format",
        "wrong version",
        "two programs",
        "not json",
        "big-endian",
        "old torch.export zip",
        "empty zip",
    ],
)
def test_malformed_archives_are_bad_input(work, damage):
    root, files = _read(work / "n.pt2")
    path = work / "damaged.pt2"
    if damage == "duplicate entry":
        _write(path, root, files)
        with zipfile.ZipFile(path, "a") as z, pytest.warns(UserWarning):
            z.writestr(f"{root}/data/weights/weight_0", b"\0" * 32)
    else:
        if damage == "no archive_format":
            del files["archive_format"]
        elif damage == "wrong version":
            files["archive_version"] = b"1"
        elif damage == "two programs":
            files["models/other.json"] = files[M]
        elif damage == "not json":
            files[M] = b"{" * 100000
        elif damage == "big-endian":
            files["byteorder"] = b"big"
        elif damage == "old torch.export zip":
            files = {
                "version": b"8.1",
                "serialized_exported_program.json": b"{}",
                "serialized_state_dict.pt": pickle.dumps(SystemPayload(work / "OLD")),
            }
        elif damage == "empty zip":
            files = {}
        _write(path, root, files)
    with pytest.raises(BadInputError):
        load_pt2(str(path))
    assert not (work / "OLD").exists()


# -- the CLI and the API ----------------------------------------------------------------------------------


def _evil_archives(work):
    marker = work / "CLI_RAN"
    out = []
    for i, position in enumerate(
        [constants_entry("opaque_obj_0/x", True, False), weights_use_pickle, entry("data/sample_inputs/model.pt")]
    ):
        root, files = _read(work / "n.pt2")
        position(files, pickle.dumps(SystemPayload(marker)))
        out.append(_write(work / f"evil{i}.pt2", root, files))
    root, files = _read(work / "n.pt2")
    _edit_json(files, M, lambda d: sym_expr("__import__('os').system(\"touch '{m}'\")")(d, marker))
    out.append(_write(work / "evil_expr.pt2", root, files))
    return marker, out


@pytest.mark.slow
def test_cli_compile_and_inspect_exit_3_without_running_anything(work, tmp_path):
    marker, archives = _evil_archives(work)
    env = {**os.environ, "EDGEC_CACHE_DIR": str(tmp_path / "cache")}
    for path in archives[:1] + archives[-1:]:  # every archive goes through edgec.compile below, in-process
        for args in (["compile", path, "-o", str(tmp_path / "out")], ["inspect", path]):
            r = subprocess.run(
                [sys.executable, "-m", "edgec.cli", *args],
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
                cwd=tmp_path,
            )
            assert r.returncode == 3, (args, r.stdout[-2000:], r.stderr[-2000:])
            assert "Traceback" not in r.stderr and path in r.stderr, r.stderr
            assert not marker.exists()
            assert not (tmp_path / "out").exists()


def test_api_compile_refuses(work, tmp_path):
    marker, archives = _evil_archives(work)
    for path in archives:
        with pytest.raises(BadInputError):
            edgec.compile(path, target="cpu", output=str(tmp_path / "out"))
        assert not marker.exists()
        assert not (tmp_path / "out").exists()


# -- normal archives keep working -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["n.pt2", "cnn.pt2"])
def test_normal_archives_match_torch_loader(work, name):
    ours, theirs = load_pt2(str(work / name)), torch.export.load(str(work / name))
    assert ours.state_dict.keys() == theirs.state_dict.keys() and ours.constants.keys() == theirs.constants.keys()
    for mine, ref in [(ours.state_dict[k], theirs.state_dict[k]) for k in theirs.state_dict] + [
        (ours.constants[k], theirs.constants[k]) for k in theirs.constants
    ]:
        assert type(mine) is type(ref) and torch.equal(mine, ref)
        assert mine.stride() == ref.stride() and mine.storage_offset() == ref.storage_offset()
    assert str(ours.graph) == str(theirs.graph)


def test_normal_cnn_compiles_and_verifies(work, tmp_path):
    res = edgec.compile(str(work / "cnn.pt2"), target="cpu", output=str(tmp_path / "out"), verify=True)
    assert res.manifest["verification"]["passed"]


def test_dynamic_shapes_still_load(work):
    class Dyn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x).reshape(-1) * (x.shape[0] // 2)

    ep = torch.export.export(Dyn(), (torch.randn(6, 4),), dynamic_shapes=({0: torch.export.Dim("n", min=2)},))
    torch.export.save(ep, str(work / "dyn.pt2"))
    model = TorchFrontend().load(str(work / "dyn.pt2"))
    assert not isinstance(model.graph.inputs[0].shape[0], int)
