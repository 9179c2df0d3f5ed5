"""edgec: one compiler for putting neural networks on every edge target.

The Python API mirrors the CLI: :func:`edgec.compile` (see :mod:`edgec.compiler`).
"""

__version__ = "0.1.0"

from .quiet import quiet_libraries  # noqa: E402

quiet_libraries()  # before onnxruntime / openvino / matplotlib are imported anywhere: see edgec.quiet

from .hookspecs import hookimpl  # noqa: E402  (plugins import it from here)

__all__ = ["__version__", "hookimpl", "compile"]


def __getattr__(name):  # lazy: importing edgec stays cheap for plugins
    if name == "compile":
        from .compiler import compile as _compile

        return _compile
    raise AttributeError(name)
