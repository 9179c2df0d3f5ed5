"""quantize and vq with an executor: the layers of one input group (q/k/v, gate/up) solved as tasks on worker
processes give a model byte-identical to the serial run's, reports included; a failed solve names the layer."""

import json

import numpy as np
import pytest

from edgec import ir
from edgec.api.executor import Executor, LocalExecutor, TaskResult
from edgec.calibration import CalibrationSet
from edgec.errors import EdgecError
from edgec.host import host
from edgec.ir.passes import PassContext, parse_pipeline

K = 256  # a GGUF K-quant block


def _block(seed=0):
    """x -> q, k, v (one input group) -> sum -> gate, up (one group) -> gate * up -> down."""
    rng = np.random.default_rng(seed)
    g = ir.Graph()
    x = g.add_input("x", ir.DType.FLOAT32, (8, K))

    def linear(name, inp, n, k=K):
        w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
        w[::9, ::7] *= 6.0  # outliers, so that the methods' choices matter
        return g.op("Linear", [inp, g.add_const(name + ".weight", w)], domain="edgec", name=name).output

    q, k, v = (linear(n, x, K) for n in ("q", "k", "v"))
    s = g.op("Add", [g.op("Add", [q, k]).output, v]).output
    gate, up = linear("gate", s, K), linear("up", s, K)
    h = g.op("Mul", [g.op("Relu", [gate]).output, up]).output
    g.outputs.append(g.op("Add", [linear("down", h, K), x]).output)
    m = ir.Model(g, {"": 17, "edgec": 1})
    ir.infer_shapes(m)
    return m


def _ctx(executor=None):
    rng = np.random.default_rng(1)
    samples = [{"x": rng.standard_normal((8, K)).astype(np.float32)} for _ in range(4)]
    h = host()
    return PassContext(
        config={"seed": 0},
        calibration=CalibrationSet(samples, "test"),
        passes=h.passes.as_dict(),
        checks=h.checks.as_dict(),
        executor=executor,
    )


def _quantized(pipeline, tmp_path, name, executor=None):
    m = _block()
    for p in parse_pipeline(pipeline, host().passes.as_dict()):
        p.run(m, _ctx(executor))
    path = tmp_path / f"{name}.edgec"
    ir.save(m, str(path))
    return path.read_bytes(), json.dumps(m.reports, sort_keys=True, default=str)


PIPELINES = [
    "quantize{method=gptq,bits=4,group=32,samples=4}",
    "quantize{method=mse,objective=output,bits=3,group=32,samples=4}",
    "quantize{method=codebook,objective=output,bits=3,samples=4}",
    "quantize{gguf=Q4_K,method=gptq,samples=4}",
    "quantize{gguf=Q3_K,method=mse}",
    "vq{dim=2,bits_per_weight=2,iters=4,finetune=4,samples=4}",
]


@pytest.mark.slow
def test_group_solves_on_worker_processes_equal_the_serial_model(tmp_path):
    """Every heavy method, its q/k/v and gate/up solves on 2 spawned workers (one pool for all six passes):
    the saved model's bytes and the reports equal the serial run's."""
    calls = []

    class Counting(LocalExecutor):
        def run(self, fn, items, shared=None, on_done=None):
            calls.append(len(items))
            return super().run(fn, items, shared, on_done)

    with Counting(workers=2) as ex:
        for i, pipe in enumerate(PIPELINES):
            serial = _quantized(pipe, tmp_path, f"serial{i}")
            n = len(calls)
            parallel = _quantized(pipe, tmp_path, f"parallel{i}", ex)
            assert calls[n:] == [3, 2], pipe  # q/k/v and gate/up as tasks; down alone, here
            assert parallel[1] == serial[1], pipe
            assert parallel[0] == serial[0], pipe
            assert ex._live is not None  # the same worker processes serve the next pass


def test_rtn_needs_no_tasks(tmp_path):
    class Refusing(Executor):
        name = "refusing"

        def run(self, fn, items, shared=None, on_done=None):
            raise AssertionError("rtn is cheaper here than sending the weights")

    a = _quantized("quantize{bits=4,group=32}", tmp_path, "a", Refusing(workers=2))
    assert a == _quantized("quantize{bits=4,group=32}", tmp_path, "b")


def test_a_failed_solve_names_the_layer_and_the_way_out():
    class Dying(Executor):
        name = "dying"

        def run(self, fn, items, shared=None, on_done=None):
            return [TaskResult(i, False, error="its worker process died 3 times") for i in range(len(items))]

    m = _block()
    (p,) = parse_pipeline("quantize{method=gptq,bits=4,samples=4}", host().passes.as_dict())
    with pytest.raises(EdgecError, match=r"quantizing q\.weight failed on the dying executor: its worker .*--workers"):
        p.run(m, _ctx(Dying(workers=2)))


@pytest.mark.slow
def test_group_solves_on_ray_equal_the_serial_model(tmp_path):
    """The same on a local Ray of 2 workers (the solves' arguments through Ray's object store)."""
    pytest.importorskip("ray", reason="Ray is edgec[ray], which scripts/setup.sh installs")
    from edgec.api.executor import make_executor

    pipe = "quantize{gguf=Q4_K,method=gptq,samples=4}"
    serial = _quantized(pipe, tmp_path, "serial")
    with make_executor("ray", workers=2) as ex:
        assert _quantized(pipe, tmp_path, "ray", ex) == serial
