"""Reads edgec's own model files: binary ``.edgec`` (memory-mapped) and the ``.edgec.txt`` text form."""

from __future__ import annotations

from ...errors import BadInputError
from ...frontend import Frontend
from ...ir import FormatError, Model, ParseError, load, parse_model


class EdgecIRFrontend(Frontend):
    name = "edgec-ir"
    summary = "edgec IR files (.edgec binary, .edgec.txt text)"
    suffixes = (".edgec", ".edgec.txt")

    def load(self, path: str) -> Model:
        try:
            if path.endswith(".txt"):
                with open(path, encoding="utf-8") as f:
                    return parse_model(f.read())
            return load(path)
        except (FormatError, ParseError, UnicodeDecodeError, ValueError) as e:
            raise BadInputError(f"{path}: {e}") from None
