"""The one exception family.

Every error Ladle raises on purpose derives from :class:`LadleError`. The classes that
the Rust core raises are created in ``rust/src/python/errors.rs`` and re-exported here, so
a caller catches ``ladle.errors.DataError`` whether the row failed in Rust or in Python.
``ArgumentError`` (a bad argument or option value) also derives from ``ValueError`` and
``FileError`` (a file that could not be read or written) from ``OSError``.
The CLI prints a ``LadleError`` as one line (no traceback unless ``--debug``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ladle._core import (
    ArgumentError,
    DataError,
    FileError,
    LadleError,
    QuantError,
    TemplateError,
    TokenizerError,
)


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a recipe, located in its YAML file."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class RecipeError(LadleError):
    """A recipe failed validation. Holds every issue found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        n = len(issues)
        head = f"{n} error{'s' if n != 1 else ''} in recipe"
        super().__init__(head + ":\n" + "\n".join(f"  {i}" for i in issues))


class ModelError(LadleError):
    """A model could not be resolved, converted or loaded."""


class TrainError(LadleError):
    """Training could not start or continue (bad combination, run folder in use)."""


class EvalError(LadleError):
    """Evaluation could not run (no eval set, bad metric spec)."""


class GateFailed(LadleError):
    """The before/after gate failed; carries the conditions that did not hold."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        super().__init__("gate failed: " + "; ".join(failures))


__all__ = [
    "ArgumentError",
    "ConfigIssue",
    "DataError",
    "EvalError",
    "FileError",
    "GateFailed",
    "LadleError",
    "ModelError",
    "QuantError",
    "RecipeError",
    "TemplateError",
    "TokenizerError",
    "TrainError",
]
