"""The ``coreml`` target: edgec IR -> an ML Program built with coremltools' MIL builder, saved as
``.mlpackage`` with named inputs/outputs and metadata.

* Opset by ``deployment=`` (``ios18`` default, ``macos15`` the same opset, ``ios16``/``ios17`` older ones with
  fewer weight encodings: see :mod:`.weights`).
* fp16 compute with fp32 I/O (``precision=fp16``, the default: what the Neural Engine runs), or fp32 compute
  (``precision=fp32``: Core ML's CPU / GPU precision, for models whose values leave fp16's range); integer
  inputs (token ids, masks) as int32. Models in f16 / f64 compute in the compute type too (f64 is rounded like
  f32); ``run_package`` returns each output in the model's dtype (bool, int64,
  f16, f64, scalars) from Core ML's fp32 / int32 outputs of rank >= 1. int8 / uint8 / int16 / uint16 compute in int32,
  wrapped back into their range after every op that can leave it.
* Weights: fp16, int8 per channel / int4 per block, palettes of 1-8 bits per tensor, channel or group from the
  IR's codebooks, pruned weights as sparse constexprs, sparse + palettized and sparse + quantized jointly;
  sub-byte data in true sub-byte types.

There is no Core ML runtime off macOS. Verification there is (a) re-loading the saved package and decoding
every compressed weight bit-exactly against the IR's weight (at emit), and (b) ``--verify``: re-executing
the saved MIL program with edgec's numpy evaluator (``evaluate.py``, tested op by op against onnxruntime).
On macOS, ``--verify`` runs ``MLModel.predict`` instead.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from ...errors import UnsupportedError
from ...hookspecs import hookimpl
from ...ir import Model, QuantizedTensor
from ...ir.passes import PassContext, option
from ...target import Artifact, Capabilities, Target, VerifyPolicy, fp16_verify_policy
from .builder import (
    DEPLOYMENTS,
    LOWERINGS,
    NARROW_INTS,
    PRECISIONS,
    MILBuilder,
    ct_modules,
    mil_name,
    opset,
    variant_problem,
)
from .weights import ENCODERS, old_opset_problem

_QUANT = ENCODERS.quant({"symmetric": (4, 8), "asymmetric": (4, 8), "codebook": range(1, 9), "vector": range(1, 9)})


# Per-run metadata coremltools writes into the spec (``convert`` records today's date): dropped so that the same
# model gives the same bytes on any day.
_PER_RUN_METADATA = ("com.github.apple.coremltools.conversion_date",)


def _stable_spec(path: str) -> None:
    """Rewrite the package's ``model.mlmodel`` deterministically. coremltools serializes the spec with plain
    ``SerializeToString()``: protobuf map fields (the metadata's ``userDefined``, every MIL op's ``inputs`` and
    ``attributes``) come out in hash-table order, which differs between processes. It also stamps the conversion
    date. Parse, drop the per-run entries, and serialize with sorted map keys (``deterministic=True``)."""
    import json
    from coremltools.proto import Model_pb2

    with open(os.path.join(path, "Manifest.json"), encoding="utf-8") as f:
        man = json.load(f)
    root = man["itemInfoEntries"][man["rootModelIdentifier"]]["path"]
    spec_path = os.path.join(path, "Data", *root.split("/"))
    spec = Model_pb2.Model()
    with open(spec_path, "rb") as f:
        spec.ParseFromString(f.read())
    for key in _PER_RUN_METADATA:
        if key in spec.description.metadata.userDefined:
            del spec.description.metadata.userDefined[key]
    data = spec.SerializeToString(deterministic=True)
    os.remove(spec_path)  # coremltools wrote it from a private temp file (mode 0600): a fresh file gets the umask's
    with open(spec_path, "wb") as f:
        f.write(data)


def _stable_package_ids(path: str) -> None:
    """coremltools names a package's items with random UUIDs, so every save differs. Derive them from each
    item's path instead (uuid5): the same model then gives a byte-identical .mlpackage."""
    import json
    import uuid

    man = os.path.join(path, "Manifest.json")
    with open(man, encoding="utf-8") as f:
        d = json.load(f)
    ids = {
        old: str(uuid.uuid5(uuid.NAMESPACE_URL, "edgec:mlpackage/" + e["path"]))
        for old, e in d.get("itemInfoEntries", {}).items()
    }
    d["itemInfoEntries"] = {ids[k]: v for k, v in d["itemInfoEntries"].items()}
    if d.get("rootModelIdentifier") in ids:
        d["rootModelIdentifier"] = ids[d["rootModelIdentifier"]]
    with open(man, "w", encoding="utf-8") as f:
        json.dump(d, f, indent=4, sort_keys=True)


def on_macos() -> bool:
    return platform.system() == "Darwin"


@dataclasses.dataclass(frozen=True)
class CoreMLTarget(Target):
    name: ClassVar[str] = "coreml"
    summary: ClassVar[str] = (
        "Core ML ML Program (.mlpackage): fp16 (or fp32) compute; int8/int4, palettized and sparse weights"
    )
    runtime: ClassVar[str] = (
        "Core ML (MLModel.predict) on macOS; elsewhere edgec's MIL evaluator (numpy) on the "
        "saved package: Core ML itself does not run on Linux"
    )
    capabilities: ClassVar[Capabilities] = Capabilities(
        ops=LOWERINGS.ops(),
        dtypes=frozenset({"f32", "f16", "f64", "i64", "i32", "bool"} | set(NARROW_INTS)),
        quant=_QUANT,
        mixed=(8, "p2", "p3", "p4", "p6"),
    )  # per-layer palette nbits, int8
    deployment: str = option(
        "ios18",
        choices=DEPLOYMENTS,
        help="minimum deployment target: picks the opset "
        "and with it the weight encodings (ios16/ios17: int8 per channel and per-tensor "
        "palettes only)",
    )
    precision: str = option(
        "fp16",
        choices=PRECISIONS,
        help="float compute type: fp16 (the Neural Engine's) or "
        "fp32 (CPU / GPU only; for values beyond fp16's range or precision)",
    )

    def verify_policy(self) -> VerifyPolicy | None:
        return fp16_verify_policy(self.precision)

    def float32_exact(self) -> bool:
        return self.precision == "fp32"

    def accepts_node(self, node, model: Model) -> bool:
        """The op, and a variant its lowering computes (others are rewritten by the decompose pass where it can,
        and refused by name otherwise)."""
        return super().accepts_node(node, model) and variant_problem(node) is None

    def check(self, model: Model) -> list[str]:
        problems = super().check(model)
        for v in model.graph.inputs:
            if v.static_shape is None:
                problems.append(
                    f"input {v.name!r} has no static shape: the coreml target builds fixed shapes (pass --input-shape)"
                )
        if self.deployment in ("ios16", "ios17"):
            problems += [
                p for v in model.graph.initializers.values() if v.uses and (p := old_opset_problem(v.name, v.const))
            ]
        return problems

    def emit(self, model: Model, out_dir: str, ctx: PassContext) -> Artifact:
        ct, mb, types = ct_modules()
        holder = {}

        def body(*args):
            # MIL names unnamed ops from a process-wide counter (Builder.name_count): start it afresh so that the
            # same model gets the same op names, and so the same bytes, in every compile of a process
            mb.name_count.clear()
            b = MILBuilder(model, self.deployment, self.precision)
            holder["b"] = b
            return tuple(b.lower(args))

        # The program's parameter names are the package's input names: give them the model's.
        names = [mil_name(v.name) for v in model.graph.inputs]
        ns: dict = {"body": body}
        exec(f"def main({', '.join(names)}):\n    return body({', '.join(names)})\n", ns)  # noqa: S102
        specs = []
        in_shapes: dict[str, list[int]] = {}
        for v in model.graph.inputs:
            # check() refuses inputs without a static shape; graph inputs are typed
            assert v.static_shape is not None and v.dtype is not None
            specs.append(
                mb.TensorSpec(
                    shape=tuple(v.static_shape) or (1,), dtype=types.fp32 if v.dtype.is_float else types.int32
                )
            )
            in_shapes[mil_name(v.name)] = list(v.static_shape)
        target = opset(self.deployment)
        try:
            prog = mb.program(input_specs=specs, opset_version=target)(ns["main"])
        except UnsupportedError:
            raise
        except Exception as e:  # noqa: BLE001 - the MIL builder refusing the program: a refusal, not a leak
            raise UnsupportedError(
                f"the MIL builder rejected the lowered program ({type(e).__name__}: {' '.join(str(e).split())[:300]})"
            ) from e
        # The program is already typed (its compute type, fp32 where chosen): FLOAT32 keeps coremltools from
        # re-casting it.
        try:
            m = ct.convert(
                prog, convert_to="mlprogram", minimum_deployment_target=target, compute_precision=ct.precision.FLOAT32
            )
        except Exception as e:  # noqa: BLE001 - coremltools' passes refusing the program: a refusal, not a leak
            raise UnsupportedError(
                f"coremltools could not convert the lowered program ({type(e).__name__}: "
                f"{' '.join(str(e).split())[:300]})"
            ) from e
        m.short_description = "compiled by edgec"
        m.user_defined_metadata["edgec.deployment"] = self.deployment
        m.user_defined_metadata["edgec.precision"] = self.precision
        out_dtypes = []
        for o in model.graph.outputs:
            assert o.dtype is not None  # every value the target lowers is typed
            out_dtypes.append(o.dtype.numpy.name)
        m.user_defined_metadata["edgec.output_dtypes"] = ",".join(out_dtypes)
        m.user_defined_metadata["edgec.output_ranks"] = ",".join(str(o.rank) for o in model.graph.outputs)
        # the installed distribution's version (the same as edgec.__version__, which pyproject reads): the edgec
        # package itself belongs to the driver layer
        m.user_defined_metadata["edgec.version"] = _edgec_version()  # per-layer reports go to manifest.json
        path = os.path.join(out_dir, "model.mlpackage")
        if os.path.exists(path):
            shutil.rmtree(path)
        m.save(path)
        _stable_spec(path)
        _stable_package_ids(path)
        b = holder["b"]
        compressed = {w: e.op for w, e in b.encoded.items() if e.op is not None}
        decoded = check_package(path, model, compressed, self.precision)
        files = sorted(os.path.relpath(os.path.join(r, f), out_dir) for r, _, fs in os.walk(path) for f in fs)
        kinds: dict[str, int] = {}
        for enc in b.encoded.values():
            kinds[enc.kind] = kinds.get(enc.kind, 0) + 1
        return Artifact(
            files,
            {
                "coremltools_version": ct.__version__,
                "deployment": self.deployment,
                "precision": self.precision,
                "weight_encodings": kinds,
                "compressed_weights": {w: b.encoded[w].kind for w in compressed},
                "decoded_bit_exact": decoded,
                "inputs": in_shapes,
                "outputs": [mil_name(o.name) for o in model.graph.outputs],
                "verification_runtime": "MLModel.predict"
                if on_macos()
                else "edgec MIL evaluator (numpy): no Core ML runtime off macOS",
            },
        )

    def runner(self, out_dir: str, files, input_names, threads: int):
        """Core ML's own runtime, loaded once (macOS only: elsewhere there is none to time; edgec's MIL evaluator,
        which --verify uses off macOS, is a numpy reference, not a runtime)."""
        if not on_macos():
            raise UnsupportedError(
                "Core ML runs only on macOS: bench a coreml artifact there (edgec's MIL evaluator, which checks it "
                "here, is a numpy reference with no speed to report)"
            )
        import coremltools as ct

        mlmodel = ct.models.MLModel(os.path.join(out_dir, "model.mlpackage"))

        def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            res = mlmodel.predict({mil_name(k): v for k, v in feeds.items()})
            return list(res.values())

        return run

    def run_artifact(self, out_dir: str, feeds: Mapping[str, np.ndarray], input_names=None):
        return run_package(os.path.join(out_dir, "model.mlpackage"), feeds)


def run_package(path: str, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run any ML Program package on the model's feeds (names as in the IR; integers as int32, floats as
    fp32): Core ML's own ``predict`` on macOS, elsewhere edgec's MIL evaluator."""
    feeds = {
        mil_name(k): (
            np.asarray(v, np.int32) if np.asarray(v).dtype.kind in "iub" else np.asarray(v, np.float32)
        ).reshape(np.shape(v) or (1,))
        for k, v in feeds.items()
    }
    if on_macos():
        outs = predict(path, feeds)
    else:
        from .evaluate import run

        outs = run(path, feeds)
    ct, _, _ = ct_modules()
    meta = ct.models.MLModel(path, skip_model_load=True).user_defined_metadata
    if meta.get("edgec.output_dtypes"):  # Core ML's outputs are fp32 / int32: back to the model's dtypes
        outs = [o.astype(d) for o, d in zip(outs, meta["edgec.output_dtypes"].split(","))]
    if meta.get("edgec.output_ranks"):  # and scalars, which leave Core ML as [1]
        outs = [o.reshape(()) if r == "0" else o for o, r in zip(outs, meta["edgec.output_ranks"].split(","))]
    return outs


def predict(path: str, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run the package on Core ML (macOS only), outputs in the program's order."""
    ct, _, _ = ct_modules()
    m = ct.models.MLModel(path)
    out = m.predict(dict(feeds))
    names = [o.name for o in m.get_spec().description.output]
    return [np.asarray(out[n]) for n in names]


def check_package(path: str, model: Model, compressed: dict[str, str], precision: str = "fp16") -> int:
    """Re-load the saved package and decode every compressed weight; each must equal the IR's dequantized
    weight (in ``precision``, the package's compute type) bit for bit. Returns how many were checked."""
    ft = np.float32 if precision == "fp32" else np.float16
    from .evaluate import constexpr_value, load_program

    prog = load_program(path)
    ops = {op.name: op for op in prog.functions["main"].operations}
    for wname, opname in compressed.items():
        got = np.asarray(constexpr_value(ops[opname]))
        w = model.graph.initializers[wname]
        want = (w.const.dequantize() if isinstance(w.const, QuantizedTensor) else np.asarray(w.numpy())).astype(ft)
        if got.shape != want.shape or not np.array_equal(got.astype(ft), want):
            raise UnsupportedError(
                f"weight {wname!r} does not decode to the IR's weight from the saved package ({opname})"
            )
    return len(compressed)


def _edgec_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgec")
    except PackageNotFoundError:
        return "unknown"


@hookimpl
def edgec_register_targets(registry):
    registry.register(CoreMLTarget)
