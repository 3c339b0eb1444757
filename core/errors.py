"""Domain errors of the core: bad manifests and unknown agents.

    InputError (bottle.ports.errors)
    ├── ManifestError       a manifest file is wrong; names file, field path, expectation
    └── UnknownAgentError   no agent of that name is declared; lists the known ones

Neither ever carries a secret value: messages quote field names, paths and
token *references*, never what a field holds when that could be a secret.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from bottle.ports.errors import BottleError, InputError

__all__ = [
    "BottleError",
    "DOCUMENT",
    "FRONT_MATTER",
    "InputError",
    "ManifestError",
    "UnknownAgentError",
    "did_you_mean",
]

# The field path used when the text itself cannot be parsed.
DOCUMENT = "(document)"
# The field path of a Markdown agent file's front matter as a whole.
FRONT_MATTER = "(front matter)"


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word``, if any is close enough to be a likely typo."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


class ManifestError(InputError):
    """A manifest source is wrong.

    ``source`` is the file (as the user would recognise it), ``field`` the
    path of the offending field (``agents.implementer.bottle.egress.allow[2]``,
    or ``(document)`` when the text does not parse), ``problem`` what was
    expected. ``str(err)`` is ``"<source>: <field>: <problem>"``.
    """

    def __init__(self, source: str, field: str, problem: str, *, hint: str | None = None) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        super().__init__(f"{source}: {field}: {problem}", hint=hint)


class UnknownAgentError(InputError):
    """``agent`` is not declared in any manifest source; ``known`` lists those that are."""

    def __init__(self, agent: str, known: Sequence[str], sources: Sequence[str] = ()) -> None:
        self.agent = agent
        self.known = tuple(known)
        self.sources = tuple(sources)
        suggestion = did_you_mean(agent, self.known)
        if self.known:
            message = f"no agent named {agent!r}; known agents: {', '.join(self.known)}"
        else:
            message = f"no agent named {agent!r}; no agents are declared"
        if suggestion:
            message += f" (did you mean {suggestion!r}?)"
        if self.sources:
            hint = "agents come from " + ", ".join(self.sources)
        else:
            hint = (
                "declare agents in ./bottle.json, ./.bottle/agents/*.md, the user manifest "
                "under ~/.config/bottle/, or pass --manifest PATH (see docs/manifest.md)"
            )
        super().__init__(message, hint=hint)
