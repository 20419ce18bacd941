"""Errors for people: what failed, on which model and file, and the next step."""
from __future__ import annotations


class PipelineError(Exception):
    """A failure a user can act on.

    Rendered as one paragraph: ``<model>: <what> (<file>). Next step: <fix>``. Built once, at
    the raise: ``str(err)`` is ``render()``; code that wants to add to a caught error raises
    a new one (``from err``) instead of editing it.
    """

    def __init__(self, what: str, *, model: str | None = None, file: object = None,
                 fix: str | None = None, details: list[str] | None = None):
        self.what = what
        self.model = model
        self.file = str(file) if file is not None else None
        self.fix = fix
        self.details = details or []
        super().__init__(what)

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        head = f"model '{self.model}': " if self.model else ""
        text = head + self.what
        if self.file:
            text += f" (file: {self.file})"
        if not text.endswith("."):
            text += "."
        for line in self.details:
            text += f"\n  - {line}"
        if self.fix:
            text += f"\nNext step: {self.fix}"
        return text

    def to_json(self) -> dict:
        return {"model": self.model, "file": self.file, "error": self.what,
                "details": self.details, "fix": self.fix}


class ConfigError(PipelineError):
    """models.yaml is malformed."""


class UsageProblem(PipelineError):
    """The command was asked for something that does not exist (a model, a set): exit 2."""
