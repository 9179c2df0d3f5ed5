"""Base class of model frontends (ONNX, PyTorch, edgec IR files, and third-party ones)."""

from __future__ import annotations

import os
from typing import ClassVar

from .ir import Model


class Frontend:
    """Turns a model file into edgec IR.

    Subclasses set ``name``, ``suffixes`` and implement :meth:`load`. They raise
    :class:`edgec.errors.BadInputError` for unreadable files and :class:`edgec.errors.UnsupportedError`
    (listing every problem) for models they cannot represent.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()

    def accepts(self, path: str) -> bool:
        return any(path.lower().endswith(s) for s in self.suffixes)

    def load(self, path: str) -> Model:
        raise NotImplementedError


def pick_frontend(path: str, frontends: dict[str, type[Frontend]], name: str | None = None) -> Frontend:
    from .errors import BadInputError, UsageError

    if name is not None:
        if name not in frontends:
            raise UsageError(f"unknown frontend {name!r}; installed: {', '.join(sorted(frontends))}")
        return frontends[name]()
    if not os.path.exists(path):
        raise BadInputError(f"model file {path!r} does not exist")
    if not (os.path.isfile(path) or os.path.isdir(path)):  # a FIFO or a device would block or never end
        raise BadInputError(f"model {path!r} is not a regular file or a folder; give the model file itself")
    for cls in frontends.values():
        fe = cls()
        if fe.accepts(path):
            return fe
    known = ", ".join(f"{n} ({'/'.join(c.suffixes)})" for n, c in sorted(frontends.items()))
    raise BadInputError(
        f"no frontend reads {os.path.basename(path)!r}; known formats: {known}; pass --frontend NAME to choose one"
    )
