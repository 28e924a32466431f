"""Error hierarchy. The CLI turns every HatRayError into one line on stderr and exit code 2."""

from __future__ import annotations

from collections.abc import Sequence


class HatRayError(Exception):
    """Base class for every error hat-ray reports to a user (bad input, bad state)."""


class ConfigError(HatRayError):
    """A configuration file (search space, device profile, experiment) is invalid.

    Carries every problem found, so a user fixes them all in one pass; ``hint`` (how to fix
    them, e.g. where a complete example is) ends the message.
    """

    def __init__(self, source: str, problems: Sequence[str], hint: str | None = None) -> None:
        self.source = source
        self.problems = list(problems)
        self.hint = hint
        n = len(self.problems)
        head = f"{source}: {n} problem{'s' if n != 1 else ''}: " if n > 1 else f"{source}: "
        super().__init__(head + "; ".join(self.problems) + (f" ({hint})" if hint else ""))


class ArchError(HatRayError):
    """An Arch does not fit a search space, or (``malformed``) is not a valid Arch at all."""

    def __init__(self, problems: Sequence[str], source: str = "arch", malformed: bool = False) -> None:
        self.problems = list(problems)
        self.source = source
        self.malformed = malformed
        if malformed:
            super().__init__(f"{source} is not a valid Arch: " + "; ".join(self.problems)
                             + " (`hat-ray arch sample --space SPACE` prints a complete one; HAT's YAML keys work too)")
        else:
            super().__init__(f"{source} does not fit the search space: " + "; ".join(self.problems))


class DataError(HatRayError):
    """A corpus, dataset or checkpoint file is missing, malformed or corrupted."""


class OutputError(HatRayError):
    """An output cannot be written (a file where a folder should be, permissions, disk full);
    whatever was there before is left intact."""


class ExportError(HatRayError):
    """A model cannot be exported as asked (an option combination a format cannot honour, a
    runtime that is not installed) or an export folder cannot be used."""


class DeviceError(HatRayError):
    """A device profile cannot run on the cluster (no such node, bad profile)."""


class InfeasibleError(HatRayError):
    """A latency constraint cannot be met inside the search space."""
