"""Base class of compilation targets and the capability check that runs before lowering."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from .errors import UnsupportedError
from .ir import Model, Node, QuantizedTensor
from .ir.integer import IntLimits
from .ir.passes import Pass, PassContext
from .ir.schemes import SCHEMES, Vector


_F = TypeVar("_F", bound=Callable[..., Any])


class _Table(dict):
    """A table of functions filled with the :meth:`register` decorator: ``@TABLE.register(key, ...)``."""

    def _check(self, keys: tuple[str, ...]) -> None:
        """Refuse keys the table cannot hold (at import, so a typo fails loudly)."""

    def register(self, *keys: str) -> Callable[[_F], _F]:
        self._check(keys)

        def deco(fn: _F) -> _F:
            for k in keys:
                self[k] = fn
            return fn

        return deco


class Lowerings(_Table):
    """A target builder's table of op lowerings, ``qualified op name -> fn(builder, node)``, filled with the
    :meth:`register` decorator; its keys are the ops the target declares it supports."""

    def ops(self) -> frozenset[str]:
        return frozenset(self)


class Encoders(_Table):
    """A target's table of weight encoders, ``scheme name -> fn(builder, ..., q)``, filled with the :meth:`register`
    decorator beside its :class:`Lowerings`; its keys are the quantization schemes (the names of
    :data:`edgec.ir.schemes.SCHEMES`) the target declares it carries. A target encodes a quantized weight with
    ``ENCODERS.encoder(q)(builder, ...)`` instead of branching on the scheme's name."""

    def _check(self, keys: tuple[str, ...]) -> None:
        unknown = [s for s in keys if s not in SCHEMES]
        if unknown:
            raise ValueError(f"Encoders.register: {unknown} are not quantization schemes; known: {', '.join(SCHEMES)}")

    def schemes(self) -> frozenset[str]:
        return frozenset(self)

    def quant(self, bits: Mapping[str, Iterable[int]] | Iterable[int]) -> frozenset[tuple[str, int]]:
        """The ``(scheme, bits)`` pairs of :attr:`Capabilities.quant` for the schemes here: ``bits`` is one range for
        every scheme, or a range per scheme name (a scheme it leaves out is carried at no width)."""
        per = bits if isinstance(bits, Mapping) else dict.fromkeys(self, bits)
        unknown = set(per) - set(self)
        if unknown:
            raise ValueError(f"Encoders.quant: no encoder for {sorted(unknown)}; the table has {sorted(self)}")
        return frozenset((s, b) for s, bs in per.items() for b in bs)

    def encoder(self, q: QuantizedTensor, what: str = "this target") -> Callable[..., Any]:
        """The encoder of ``q``'s scheme; an UnsupportedError naming the schemes carried when there is none."""
        fn = self.get(q.scheme)
        if fn is None:
            raise UnsupportedError(
                f"{what} does not encode {q.scheme} weights; it carries "
                f"{', '.join(sorted(self)) or 'no quantized weights'}"
            )
        return fn


# What to do with vq weights on a target that cannot carry them (the base check's and TensorRT's message).
VECTOR_HINT = (
    "compile them for cpu, openvino or (indices of up to 8 bits) coreml, or quantize with "
    "quantize{method=gptq} instead of vq"
)


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a target can lower, as data (checked against a model before any lowering)."""

    ops: frozenset[str]  # qualified op names, e.g. "Conv", "edgec::Linear"
    dtypes: frozenset[str] = frozenset({"f32", "i64", "i32", "bool"})
    quant: frozenset[tuple[str, int]] = frozenset()  # (scheme, bits) weight encodings it carries exactly
    activation_quant: bool = False
    # The per-layer weight encodings the target's runtime mixes natively, mixed-precision's default candidates:
    # integer widths, "pN" (an N-bit palette) and "f16" (the layer stays float16; only where the runtime
    # computes unquantized layers in half precision).
    mixed: tuple[int | str, ...] = ()
    # Ops the target lowers node by node through its own library's ONNX importer (TVM's Relax ONNX converters,
    # OpenVINO's ONNX frontend, ...) rather than its own builder. The decompose pass leaves them alone (the
    # library's own lowering is the fast path) and rewrites only ops in neither set; a target leaves out of this
    # set any op its library is known to get wrong, so that it is decomposed or refused instead.
    fallback_ops: frozenset[str] = frozenset()
    # Float division is correctly rounded (IEEE). Rewrites whose result turns on a quotient's last bit (a
    # QuantizeLinear's rounding of x / scale) are made only where it is: OpenVINO's CPU plugin divides through a
    # reciprocal (27% of random float32 quotients differ in the last bit).
    exact_division: bool = True

    def accepts(self, op: str) -> bool:
        """True when ``op`` (a qualified name) is lowered, natively or through the fallback."""
        return op in self.ops or op in self.fallback_ops

    def problems(self, model: Model) -> list[str]:
        """Every node and weight of ``model`` this target cannot lower, one message each."""
        out = []
        for n in model.graph:
            if not self.accepts(n.qualified_op):
                out.append(
                    f"node {n.name!r}: operator {n.qualified_op} (opset {model.opset_imports.get(n.domain, '?')})"
                    " is not supported by this target"
                )
            elif (
                n.op_type in ("Cast", "QuantizeLinear")
                and not n.domain
                and any(o is not None and o.dtype is None for o in n.outputs)
            ):
                to = n.attr("to", n.attr("output_dtype"))
                name = onnx_type_name(to) if isinstance(to, int) else "an element type"
                out.append(
                    f"node {n.name!r}: {n.op_type} to {name}, which edgec has no dtype for (FLOAT6E2M3, "
                    "FLOAT6E3M2, ...), is not supported"
                )
        acts = [v.name for v in model.graph.values() if v.quant is not None]
        if acts and not self.activation_quant:
            out.append(
                f"{len(acts)} value(s) carry int8 activation quantization ({', '.join(acts[:3])}"
                f"{' ...' if len(acts) > 3 else ''}: from quantize-activations or an imported Q/DQ model), which "
                "this target does not carry; add -p float-activations to compute activations in float (the "
                "weights keep their grid), or choose a target with int8 activations"
            )
        for v in model.graph.values():
            if v.dtype is not None and v.dtype.short not in self.dtypes and not v.is_const:
                out.append(f"value {v.name!r}: dtype {v.dtype.short} is not supported by this target")
            if isinstance(v.const, QuantizedTensor) and (v.const.scheme, v.const.bits) not in self.quant:
                q = v.const
                if isinstance(q.scheme_type, Vector):
                    out.append(
                        f"weight {v.name!r}: vector quantization ({q.vector_dim}-D vectors, {q.bits}-bit "
                        f"indices) cannot be encoded by this target; {VECTOR_HINT}"
                    )
                else:
                    out.append(
                        f"weight {v.name!r}: {q.scheme} {q.bits}-bit quantization cannot be encoded by this target"
                    )
        return out


@dataclasses.dataclass
class Artifact:
    """What a target emitted: files relative to the output directory and target-specific manifest data."""

    files: list[str]
    manifest: dict[str, Any] = dataclasses.field(default_factory=dict)


def onnx_type_name(elem: int) -> str:
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(elem)
    except ValueError:
        return f"element type {elem}"


@dataclasses.dataclass(frozen=True)
class VerifyPolicy:
    """How ``--verify`` judges an artifact against the reference executor where agreement within ``--tolerance`` is
    not the target's contract (its runtime computes differently by design). Every bound must hold per output."""

    description: str  # why, shown in the verification summary
    min_cosine: float  # cosine similarity to the reference
    min_top1: float | None = None  # top-1 agreement over the decisive rows of classifier-like outputs
    top1_margin: float = 1e-3  # a row is decisive when its reference top-1 leads by this x max|reference|
    max_rel_err: float | None = None  # max relative error (the larger of this and --tolerance)


# Simulated activation quantization in float32: implementations that differ by one ulp (accumulation order) move
# values across rounding boundaries; each flip changes a value by one quantization step and chains of layers
# spread it. Exact agreement is impossible, so such models are judged by direction and bounded size.
ACT_QUANT_POLICY = VerifyPolicy("rounding-boundary flips", min_cosine=0.9999, max_rel_err=5e-2)
# a target running activation-quantized Conv / Linear as integer kernels (integer_semantics())
INTEGER_POLICY = VerifyPolicy(
    "static int8 Conv / Linear run as integer kernels with fixed-point requantization (edgec.ir.integer), which "
    "differs from the float simulation by about one step at rounding boundaries; the artifact must also match the "
    "integer reference, at --tolerance where no float op of implementation-dependent rounding feeds a quantization",
    min_cosine=0.999,
    max_rel_err=0.05,
)


def fp16_verify_policy(precision: str) -> VerifyPolicy | None:
    """The --verify criterion of a target computing in ``precision``: fp16 compute cannot meet --tolerance, so
    it is judged by cosine and top-1 agreement; fp32 compute by --tolerance (None)."""
    if precision != "fp16":
        return None
    return VerifyPolicy(
        "fp16 compute: cosine >= 0.999 and top-1 agreement >= 0.95 vs the reference", min_cosine=0.999, min_top1=0.95
    )


@dataclasses.dataclass(frozen=True)
class Target:
    """A compilation target. Subclasses are frozen dataclasses whose fields are the target's options
    (``--target name{opt=value}``), like passes."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities]
    runtime: ClassVar[str] = ""  # what --verify runs the artifact on

    def verify_policy(self) -> VerifyPolicy | None:
        """The criterion --verify applies to every artifact of this target instead of --tolerance, where its runtime
        computes differently by design (fp16 compute, llama.cpp's int8 activations in matmuls); None: --tolerance."""
        return None

    def act_quant_policy(self) -> VerifyPolicy:
        """The criterion for activation-quantized models (``quantize-activations``): the float simulation's
        rounding-boundary flips, or INTEGER_POLICY where the target runs them as integer kernels."""
        return INTEGER_POLICY if self.integer_semantics() else ACT_QUANT_POLICY

    def float32_exact(self) -> bool:
        """True when float32 values are computed in float32 (False where the runtime computes them in a narrower
        type by design, e.g. Core ML's fp16): rewrites whose integer / code results turn on float32 comparisons
        (float8 and int4 encodings, quantization) are made only where it is."""
        return True

    def integer_semantics(self) -> bool:
        """True when the artifact runs activation-quantized Conv / Linear exactly as :mod:`edgec.ir.integer`
        defines: --verify then also compares it with that integer reference, at --tolerance."""
        return False

    def integer_limits(self) -> IntLimits:
        """The convolutions this target's integer kernels take (:func:`edgec.ir.integer.plan`'s limits): the integer
        reference --verify compares with plans with the same."""
        return IntLimits()

    # a compile's relative cost (1: translating the graph into a runtime's format; a target that generates and
    # compiles code says more): edgec build starts the costly compiles first, so none is left to run alone at the end
    compile_cost: ClassVar[float] = 1.0
    dynamic_shapes: ClassVar[bool] = False  # True: the artifact takes any input length (no shape fixing)

    def __post_init__(self) -> None:
        Pass.__post_init__(self)  # type: ignore[arg-type]  # same option validation as passes (duck-typed)

    def describe(self) -> str:
        return Pass.describe(self)  # type: ignore[arg-type]

    @classmethod
    def options(cls) -> list[dict[str, Any]]:
        return Pass.options.__func__(cls)  # type: ignore[attr-defined]

    def pipeline(self) -> list[Pass]:
        """Target-specific passes run after the user's pipeline (legalization)."""
        return []

    def check(self, model: Model) -> list[str]:
        return self.capabilities.problems(model)

    def accepts_node(self, node: Node, model: Model) -> bool:
        """True when the target takes this node as it is (its op, and the variant: dtypes, attributes). The
        decompose pass rewrites nodes it does not take; a target with per-variant limits overrides this so that
        such nodes are rewritten too (the check still names whatever stays)."""
        return self.capabilities.accepts(node.qualified_op)

    def emit(self, model: Model, out_dir: str, ctx: PassContext) -> Artifact:
        raise NotImplementedError

    def logits_engine(
        self, out_dir: str, files: Sequence[str], ctx: int
    ) -> tuple[str, Callable[[np.ndarray], np.ndarray]] | None:
        """A language model's artifact on the target's own runtime, for perplexity (``--eval-text``, ``--verify``):
        ``(runtime name, fn)`` where ``fn(token ids [T]) -> next-token logits [T, vocab]`` for up to ``ctx`` tokens;
        None where the target has no language-model runtime here (only the compiled IR is then measured)."""
        return None

    def artifact_metadata(self, out_dir: str, files: Sequence[str]) -> dict[str, str] | None:
        """The model metadata an artifact carries (a language model's configuration, and where its tokenizer lives:
        ``edgec.api.llm.SOURCE_KEY``), for ``edgec eval`` of the artifact; None where it carries none."""
        return None

    def chat(
        self, out_dir: str, files: Sequence[str], messages: list[dict[str, str]], max_new_tokens: int
    ) -> str | None:
        """A chat reply (greedy) of a language model's artifact on the target's runtime, for ``edgec eval --chat``;
        None where the target has no generation runtime here."""
        return None

    def generator(
        self, out_dir: str, files: Sequence[str], ctx: int
    ) -> tuple[str, Callable[[Sequence[int], int], str]] | None:
        """A language model's artifact generating on the target's runtime, for ``edgec eval --tool-calls``:
        ``(runtime name, fn)`` where ``fn(prompt token ids, max_new_tokens) -> text`` decodes greedily (no sampling)
        until the end-of-sequence token or ``max_new_tokens``, for a prompt plus new tokens of up to ``ctx`` tokens.
        The prompt arrives tokenized (a chat template rendered by the driver, with the artifact's own tokenizer:
        :meth:`artifact_metadata`), so every engine sees the same tokens. None where it has no generation runtime
        here."""
        return None

    def run_artifact(
        self, out_dir: str, feeds: Mapping[str, np.ndarray], input_names: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        """Execute the emitted artifact on its runtime (for ``--verify``): the outputs in the model's order.
        ``input_names`` are the model's inputs in order (for runtimes that bind inputs by position)."""
        raise NotImplementedError(f"target {self.name} has no runtime on this machine")

    def runner(
        self, out_dir: str, files: Sequence[str], input_names: Sequence[str], threads: int
    ) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
        """The artifact loaded once on the target's runtime, for ``edgec bench``: a function running one inference
        (inputs by name, outputs in the model's order) on ``threads`` threads. Raises UnsupportedError saying why
        where its artifacts cannot be timed here (no runtime on this machine, a foreign architecture)."""
        raise UnsupportedError(f"target {self.name} cannot time its artifacts: it has no runtime for them here")

    def llm_speed(
        self, out_dir: str, files: Sequence[str], prompt_tokens: int, new_tokens: int, threads: int
    ) -> dict[str, Any] | None:
        """A language model's artifact on the target's runtime, for ``edgec bench``: ``prefill_tokens_per_s``,
        ``decode_tokens_per_s`` and ``decode_ms_per_token`` (with ``prompt_tokens`` and ``new_tokens``) for a
        prompt of ``prompt_tokens`` tokens followed by ``new_tokens`` decode steps; None where the artifact is not
        a language model this target times as one (``edgec bench`` then times :meth:`runner`)."""
        return None

    def simulated_cost(
        self, out_dir: str, files: Sequence[str], feeds: Mapping[str, np.ndarray]
    ) -> dict[str, Any] | None:
        """Where the runtime here is a simulator, whose times say nothing of the device: the cost figures it counts
        for one inference (Hexagon: packets executed under qemu), for ``edgec bench``; None elsewhere."""
        return None

    def run_model_types(
        self,
        out_dir: str,
        feeds: Mapping[str, np.ndarray],
        manifest: Mapping[str, Any],
        input_names: Sequence[str] | None = None,
    ) -> list[np.ndarray]:
        """:meth:`run_artifact` fed and read in the model's own element types: inputs and outputs the manifest
        records as ``stored_as`` a storage type (a float8's bits in uint8, an int4 in int8: see legalize-dtypes)
        are converted to it and back (:func:`edgec.ir.dtypes.to_storage` / ``from_storage``)."""
        from .ir.dtypes import DType, from_storage, to_storage

        stored_in = {e["name"] for e in manifest.get("inputs") or [] if e.get("stored_as")}
        got = self.run_artifact(
            out_dir, {k: to_storage(v) if k in stored_in else v for k, v in feeds.items()}, input_names
        )
        outs = list(manifest.get("outputs") or [])
        return [
            from_storage(g, DType(e["dtype"])) if k < len(outs) and (e := outs[k]).get("stored_as") else g
            for k, g in enumerate(got)
        ]
