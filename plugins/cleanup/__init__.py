"""Built-in cleanup and fusion passes (one pass per module)."""

from ...hookspecs import hookimpl
from .dce import DeadCodeElimination
from .decompose import Decompose
from .eliminate_empty import EliminateEmpty
from .eliminate_identity import EliminateIdentity
from .fold_batchnorm import FoldBatchNorm
from .fold_constants import FoldConstants
from .fold_pad import FoldPad
from .fold_qdq import FoldQDQ
from .fuse_attention import FuseAttention
from .fuse_gelu import FuseGelu
from .fuse_layernorm import FuseLayerNorm
from .fuse_linear import FuseLinear
from .fuse_rmsnorm import FuseRMSNorm
from .legalize_dtypes import LegalizeDtypes
from .simplify_shapes import SimplifyShapes

# decompose's rules beyond its own module: registered (in this order, after decompose's) by importing them
from . import decompose_linear, decompose_ml, decompose_pool, decompose_quant  # noqa: F401
from . import decompose_resize, decompose_rnn, decompose_training  # noqa: F401

PASSES = (
    DeadCodeElimination,
    Decompose,
    EliminateEmpty,
    EliminateIdentity,
    FoldBatchNorm,
    FoldConstants,
    FoldPad,
    FoldQDQ,
    FuseAttention,
    FuseGelu,
    FuseLayerNorm,
    FuseLinear,
    FuseRMSNorm,
    LegalizeDtypes,
    SimplifyShapes,
)

# What `edgec compile` runs before the user's pipeline: a pre-quantized model's Q/DQ nodes into edgec's own
# quantization first (before anything folds them into float constants), normalize the graph into the forms targets expect, then
# hold the element types the target lacks in storage types (legalize-dtypes, whose conversions decompose may
# rewrite further), rewrite what the target does not take (decompose; after the fusions, so that e.g. a foldable
# Gemm becomes edgec::Linear first, and before constant folding, which evaluates the shape arithmetic of the rewrites).
DEFAULT_CLEANUP = (
    "fold-qdq,simplify-shapes,eliminate-identity,fold-batchnorm,fuse-layernorm,fuse-rmsnorm,fuse-gelu,"
    "fuse-attention,fuse-linear,legalize-dtypes,decompose,eliminate-empty,fold-constants,fold-pad,dce"
)


@hookimpl
def edgec_register_passes(registry):
    for p in PASSES:
        registry.register(p)
