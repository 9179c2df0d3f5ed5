"""edgec's user-facing errors and the CLI exit code of each class.

Exit codes (documented in the README and ``edgec --help``):

====  ==========================================================================
0     success
1     verification failed: the artifact's outputs differ from the reference
2     usage error: unknown command, option, pass, pass option or target; an output location that cannot
      be written or must not be replaced (``--force``)
3     bad input: a model or data file is missing, unreadable, corrupt or mismatched
4     unsupported: the model uses operators or features the frontend/target cannot handle
5     a plugin failed to load or registered something invalid
70    internal error (a bug in edgec: please report it with ``--debug`` output)
130   interrupted (Ctrl-C); 143 terminated (SIGTERM): nothing written, the previous output kept
====  ==========================================================================
"""

from __future__ import annotations


class EdgecError(Exception):
    """Base of all errors edgec reports to users (without a traceback unless ``--debug``)."""

    exit_code = 70
    kind = "internal"


class VerificationFailed(EdgecError):
    exit_code = 1
    kind = "verification-failed"


class UsageError(EdgecError):
    exit_code = 2
    kind = "usage"


class BadInputError(EdgecError):
    exit_code = 3
    kind = "bad-input"


class UnsupportedError(EdgecError):
    exit_code = 4
    kind = "unsupported"

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = problems or []
        if self.problems:
            message += "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class PluginError(EdgecError):
    exit_code = 5
    kind = "plugin"


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (temporary files removed, the previous output kept); exit code 143."""
