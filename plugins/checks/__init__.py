"""Built-in property checks, for ``mixed-precision{max_drop=...,checks=NAME:ARG;...}``: ``top1`` on any model's
outputs, ``json`` and ``contains`` on what a language model generates. The ``Check`` contract is edgec.checks."""

from ...hookspecs import hookimpl
from .generation import GENERATION_CHECKS
from .top1 import Top1Agreement

CHECKS = (Top1Agreement, *GENERATION_CHECKS)


@hookimpl
def edgec_register_checks(registry):
    for c in CHECKS:
        registry.register(c)
