"""A test plugin that registers a target whose name clashes with the built-in ``cpu``."""

import dataclasses
from typing import ClassVar

import edgec
from edgec.target import Target


@dataclasses.dataclass(frozen=True)
class ClashingCpu(Target):
    name: ClassVar[str] = "cpu"


@edgec.hookimpl
def edgec_register_targets(registry):
    registry.register(ClashingCpu)
