"""edgec's public plugin API: everything a pass, frontend, check or target needs, in one place.

Built-in plugins and targets use only this layer (and the IR); a vendor's plugin gets exactly what they get.
The layers (checked in CI by import-linter, ``.ci/layers``)::

    edgec.ir  <-  edgec.api (this package: edgec.target, edgec.frontend, edgec.checks, ...)
              <-  edgec.plugins | edgec.targets  <-  the driver (edgec.compiler, edgec.cli, ...)

Submodules hold the shared libraries that more than one plugin or target builds on.
"""

from __future__ import annotations

from .. import ir
from ..checks import Check, CheckResult
from ..errors import BadInputError, EdgecError, PluginError, UnsupportedError, UsageError, VerificationFailed
from ..frontend import Frontend
from ..hookspecs import hookimpl
from ..ir import DType, Graph, Model, Node, QuantizedTensor, Tensor, Value
from ..ir.passes import Pass, PassContext, option
from ..output import TUNING_DIR, default_cache_dir
from ..target import Artifact, Capabilities, Encoders, Lowerings, Target, VerifyPolicy

__all__ = [
    "Artifact",
    "BadInputError",
    "Capabilities",
    "Check",
    "CheckResult",
    "DType",
    "EdgecError",
    "Encoders",
    "Frontend",
    "Graph",
    "Lowerings",
    "Model",
    "Node",
    "Pass",
    "PassContext",
    "PluginError",
    "QuantizedTensor",
    "Target",
    "TUNING_DIR",
    "Tensor",
    "UnsupportedError",
    "UsageError",
    "Value",
    "VerificationFailed",
    "VerifyPolicy",
    "default_cache_dir",
    "hookimpl",
    "ir",
    "option",
]
