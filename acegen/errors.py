"""The exception hierarchy of acegen.

Every error acegen raises on purpose derives from :class:`AcegenError` and says what
is wrong and where (file, field, atom index)."""

from __future__ import annotations


class AcegenError(Exception):
    """Base class of every error acegen raises on purpose."""


class SpecError(AcegenError, ValueError):
    """An invalid basis specification or model parameter."""


class ModelFileError(AcegenError, ValueError):
    """A model file that cannot be read: names the file and the field."""

    def __init__(self, path, field, message):
        self.path = str(path) if path is not None else None
        self.field = field
        where = f"{self.path}" if self.path else "<model>"
        if field:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")


class StructureError(AcegenError, ValueError):
    """A structure (ASE Atoms) that cannot be evaluated: names the atom index.

    ``pair``: the index of the offending neighbour pair when a kernel rejected one (the
    caller, who owns the neighbour list, can name both atoms of it)."""

    def __init__(self, message: str, *, pair: int | None = None):
        super().__init__(message)
        self.pair = pair


class CompileError(AcegenError, RuntimeError):
    """A generated kernel failed to compile or load."""


class InternalError(AcegenError, RuntimeError):
    """A broken internal invariant (an IR, program or DAG that acegen built inconsistently):
    a bug in acegen, not in the user's input."""


class FitError(AcegenError, ValueError):
    """A fit that cannot proceed: bad data, bad options or a failed solve."""


class TargetError(FitError):
    """A training target (energy, forces, virial) that is missing or not finite.

    ``index`` is the structure's position in the input list, ``key`` the key looked up."""

    def __init__(self, index: int, key: str, message: str):
        self.index = index
        self.key = key
        super().__init__(f"structure {index}: key {key!r}: {message}")


class ConfigError(FitError):
    """An invalid fit configuration: names the file and the field (dotted path)."""

    def __init__(self, path, field: str | None, message: str):
        self.path = None if path is None else str(path)
        self.field = field
        where = self.path or "<config>"
        if field:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")
