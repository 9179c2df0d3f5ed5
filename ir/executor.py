"""The reference executor: runs any IR model on the CPU with the exact numerics its weights imply.

The model is written as standard ONNX (quantized weights replaced by their exact dequantized values,
``edgec`` ops expanded into their definitions) and run by onnxruntime. Any intermediate value can be
captured, which is how calibration observes activations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import cast

import numpy as np

from .core import Model
from .dtypes import DType
from .onnx_io import to_onnx


class ExecutionError(RuntimeError):
    """The reference executor could not run the model on the given inputs."""


class ReferenceExecutor:
    """Runs ``model`` through onnxruntime. Build a new executor after mutating the model.

    Args:
        model: the model to run.
        capture: names of intermediate values to make observable (returned by :meth:`run`).
        threads: intra-op threads for onnxruntime (0: its default).
        capture_only: compute only what the captured values depend on, and return only them (calibration).
        keep_quantized: hold affine quantized weights as integer codes dequantized inside the graph
            (bit-identical numbers, a quarter of the memory; costs the dequantization on every run).
        cut: with ``capture_only``, intermediate values (name -> an example array) that :meth:`run` is given
            instead of computing them: only the graph between them and the captured values runs.
        free: names of float weight constants fed on every run instead of stored in the session (their
            current values by default; :meth:`run`'s feeds may override them): one session evaluates many
            variants of those weights (sensitivity analysis).
        spin: let onnxruntime's idle pool threads busy-wait for the next run (its default; off for sessions
            run in a chain, where the waiting threads of one would take the cores from the next).
    """

    def __init__(
        self,
        model: Model,
        capture: Iterable[str] = (),
        threads: int = 0,
        *,
        capture_only: bool = False,
        keep_quantized: bool = False,
        cut: Mapping[str, np.ndarray] | None = None,
        free: Iterable[str] = (),
        spin: bool = True,
    ):
        import onnxruntime as ort

        self.model = model
        self.capture = list(dict.fromkeys(capture))
        # Weights reach onnxruntime as buffers, not inside the protobuf: the proto would otherwise hold
        # one more full copy of the model (plus its serialized string) while the session is created.
        weights: dict[str, np.ndarray] = {}
        if capture_only and not self.capture:
            raise ExecutionError("capture_only needs at least one value to capture")
        if cut and not capture_only:
            raise ExecutionError("cut inputs need capture_only")
        proto = to_onnx(
            model,
            extra_outputs=None if capture_only else self.capture,
            external=weights,
            keep_quantized=keep_quantized,
            only_outputs=self.capture if capture_only else None,
            cut={k: (np.asarray(a).dtype, np.asarray(a).ndim) for k, a in (cut or {}).items()},
            free=frozenset(free),
        )
        self.free = {n: np.ascontiguousarray(np.asarray(model.graph.value(n).numpy(), np.float32)) for n in free}
        opts = ort.SessionOptions()
        if weights:
            opts.add_external_initializers(
                list(weights), [ort.OrtValue.ortvalue_from_numpy(a) for a in weights.values()]
            )
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        if not spin:  # many sessions run one after another: idle pool threads must not busy-wait on the cores
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        # Exact semantics: no fusions that change rounding. Even the basic level rewrites
        # QuantizeLinear/DequantizeLinear around Conv/MatMul into integer kernels with other rounding, so
        # models with simulated activation quantization run with graph optimizations off.
        simulated = any(v.quant is not None for v in model.graph.values())
        opts.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_DISABLE_ALL if simulated else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        )
        # Constant folding would turn the in-graph dequantization back into float weights.
        disabled = ["ConstantFolding"] if keep_quantized else None
        if capture_only:
            # Short-lived calibration sessions: onnxruntime's arena grows by doubling and keeps what it took,
            # so plain allocations keep the process's peak memory close to what is actually live.
            opts.enable_cpu_mem_arena = False
        try:
            self.session = ort.InferenceSession(
                proto.SerializeToString(), opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
            )
        except Exception as e:  # noqa: BLE001 - onnxruntime raises a zoo of types
            raise ExecutionError(f"onnxruntime could not load the model: {e}") from None
        del weights, opts  # onnxruntime copied the buffers during session creation
        self.output_names = [o.name for o in self.session.get_outputs()]
        taken = {i.name for i in self.session.get_inputs()}
        # a free weight the computed part never reads is not an input of the session
        self.free = {n: a for n, a in self.free.items() if n in taken}
        self.input_names = (
            [i.name for i in self.session.get_inputs() if i.name not in self.free]
            if capture_only
            else [i.name for i in model.graph.inputs]
        )

    def run(
        self, feeds: Mapping[str, np.ndarray], hooks: Mapping[str, Callable[[np.ndarray], None]] | None = None
    ) -> dict[str, np.ndarray]:
        """Run once. Returns every graph output and captured value by name; calls ``hooks[name](array)``."""
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ExecutionError(f"missing inputs {missing}; the model takes {self.input_names}")
        inputs = {n: np.asarray(feeds[n]) for n in self.input_names}
        for n, a in self.free.items():
            inputs[n] = np.asarray(feeds[n], np.float32) if n in feeds else a
        try:
            outs = self.session.run(self.output_names, inputs)
        except Exception as e:  # noqa: BLE001
            raise ExecutionError(f"reference execution failed: {e}") from None
        res = dict(zip(self.output_names, outs))
        for name, fn in (hooks or {}).items():
            fn(res[name])
        return res


def run(model: Model, feeds: Mapping[str, np.ndarray], capture: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """One-shot convenience wrapper around :class:`ReferenceExecutor`."""
    return ReferenceExecutor(model, capture).run(feeds)


def random_inputs(model: Model, seed: int = 0, dims: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs matching the model's input types (never zeros). Symbolic dims come from ``dims`` or 1."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in model.graph.inputs:
        shape = [d if isinstance(d, int) else (dims or {}).get(str(d), 1) for d in (v.shape or ())]
        dtype = cast(DType, v.dtype)  # graph inputs are typed
        dt = dtype.numpy
        if dtype.is_float or dtype.is_narrow_float:
            feeds[v.name] = rng.standard_normal(shape).astype(np.float32).astype(dt)
        elif dtype.short == "bool":
            feeds[v.name] = rng.random(shape) > 0.5
        elif dtype.bits < 8:  # sub-byte integers: values of the type's range, as its ml_dtypes array
            from .dtypes import code_range, from_storage

            lo, hi = code_range(dtype.bits, dtype.numpy == np.int8)
            feeds[v.name] = from_storage(rng.integers(lo, hi + 1, size=shape).astype(dt), dtype)
        else:
            hi = int(v.meta.get("vocab_size", 100))
            feeds[v.name] = rng.integers(0, hi, size=shape).astype(dt)
    return feeds
