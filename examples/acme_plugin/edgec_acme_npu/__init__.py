"""A toy vendor plugin: the ``acme-npu`` target, the ``acme-llm`` target (its language-model path, in
:mod:`edgec_acme_npu.llm`) and an ``acme-count-ops`` pass. It imports only edgec's plugin API (``edgec.api``).

The Acme NPU "format" is deliberately simple so the example stays readable: the graph is written as
edgec's text IR plus a weights file, and ``run_artifact`` executes it with edgec's reference executor
(a real vendor would call its SDK's compiler and simulator there). It accepts only the ops in
``capabilities.ops``, so compiling anything else fails *before* emission with every offending node listed.
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

from edgec.api import Artifact, Capabilities, Pass, PassContext, Target, hookimpl, option
from edgec.ir import ReferenceExecutor, load, save

from .llm import AcmeLLMTarget


@dataclasses.dataclass(frozen=True)
class AcmeNpuTarget(Target):
    name: ClassVar[str] = "acme-npu"
    summary: ClassVar[str] = "Acme NPU (example vendor plugin)"
    runtime: ClassVar[str] = "acme simulator (edgec reference executor)"
    capabilities: ClassVar[Capabilities] = Capabilities(
        ops=frozenset(
            {"Conv", "Relu", "Add", "MaxPool", "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape", "edgec::Linear"}
        )
    )
    cores: int = option(1, choices=(1, 2, 4), help="NPU cores to schedule on")

    def emit(self, model, out_dir: str, ctx: PassContext) -> Artifact:
        save(model, os.path.join(out_dir, "acme.edgec"))
        return Artifact(["acme.edgec"], {"cores": self.cores})

    def run_artifact(self, out_dir, feeds, input_names=None):
        m = load(os.path.join(out_dir, "acme.edgec"))
        res = ReferenceExecutor(m).run(feeds)
        return [res[o.name] for o in m.graph.outputs]


@dataclasses.dataclass(frozen=True)
class CountOps(Pass):
    name: ClassVar[str] = "acme-count-ops"
    summary: ClassVar[str] = "record the op count in the model metadata (example pass)"

    def run(self, model, ctx) -> bool:
        model.metadata["acme.op_count"] = str(len(model.graph))
        return False


@hookimpl
def edgec_register_targets(registry):
    registry.register(AcmeNpuTarget)
    registry.register(AcmeLLMTarget)


@hookimpl
def edgec_register_passes(registry):
    registry.register(CountOps)
