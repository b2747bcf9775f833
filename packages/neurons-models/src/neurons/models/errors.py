"""Exception hierarchy of :mod:`neurons.models`.

Every error raised on purpose by this package derives from :class:`ModelError`. The concrete
classes also derive from the matching built-in (``ValueError``/``RuntimeError``/``KeyError``) so
that generic ``except ValueError`` handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "ModelError",
    "ModelConfigError",
    "UnknownModelError",
    "ModelBuildError",
    "ModelInputError",
    "PromptError",
]


class ModelError(Exception):
    """Base class of every error raised by ``neurons.models``."""


class ModelConfigError(ModelError, ValueError):
    """Invalid constructor / registry arguments (unknown preset, unknown kwarg, bad value)."""


class UnknownModelError(ModelConfigError, KeyError):
    """``build_model`` was asked for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class ModelBuildError(ModelError, RuntimeError):
    """The requested backbone could not be built (no silent fallback to another network)."""


class ModelInputError(ModelError, ValueError):
    """The image given to ``forward`` has the wrong rank, channel count, dtype or size."""


class PromptError(ModelInputError):
    """Point prompts / class prompts given to ``forward`` are malformed or out of bounds."""
