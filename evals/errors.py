"""Errors raised by the evals for bad user input.

Library code raises :class:`EvalInputError` when a dataset folder, a ground-truth file or a
prediction file is wrong (missing, malformed, of the wrong size), and its subclass
:class:`RunDirError` when a run directory cannot be used (locked by another process, set up
differently, damaged). The message names the file and says how to fix it, so the CLI can print it
as is and exit with status 2. Anything else that escapes the library is a bug and keeps its
traceback.
"""

from __future__ import annotations


class EvalInputError(ValueError):
    """A dataset, ground-truth or prediction input is missing or malformed.

    Subclasses ``ValueError`` so callers that catch ``ValueError`` keep working.
    """


class RunDirError(EvalInputError):
    """The run directory cannot be used as asked (locked, set up differently, corrupt)."""
