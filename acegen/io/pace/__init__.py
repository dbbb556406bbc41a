"""Read, validate and write PACE potential files (Lysogorskiy et al. 2021): ``.yace``, legacy
``.ace`` and B-basis ``.yaml``, one module per job: :mod:`.model` (the data model),
:mod:`.checks` (validation and YAML), :mod:`.yace`, :mod:`.ace`, :mod:`.bbasis` (readers; the
B-basis conversion uses :mod:`acegen.symbolic.clebsch_gordan`), :mod:`.writer` (``.yace``) and
:mod:`.bbasis_writer` (B-basis ``.yaml``).

The three formats are those of python-ace 0.4.0rc1 and ace-evaluator 2024.7.4 (see
docs/pace.md and docs/pace-formats-support.md).  Everything is converted to one typed, frozen representation, the
*C-tilde* form that PACE evaluates:

* :class:`PacePotential` — elements, per-element ``E0``, the spline spacing, one
  :class:`PaceEmbedding` per element, one :class:`PaceBond` per ordered species pair and, per
  central species, a list of :class:`PaceFunction`.
* :class:`PaceFunction` stores PACE's *half* basis as written in the files: radial indices
  ``ns`` are **1-based**, ``ms_combs`` is an ``(M, rank)`` integer array and ``ctildes`` an
  ``(M, ndensity)`` float array.  A rank-1 function acts on the radial basis ``g_{ns[0]-1}``.

``.yaml`` (B-basis, pacemaker output) is read into :class:`BBasisPotential` by
:func:`read_bbasis_yaml` and converted to C-tilde by :func:`bbasis_to_ctilde`, which follows
PACE's own construction (generalised Clebsch–Gordan coefficients along PACE's binary coupling
tree, half basis with doubled coefficients, permutation compression, merging of equal
(mus, ns, ls)).

Every problem with a file's *content* raises :class:`acegen.errors.ModelFileError` naming the
file and the offending field (e.g. ``bonds[0,1].rcut``); no other exception type escapes for
bad content.  YAML is parsed with PyYAML's safe loader (a subclass that only adds support for
sequence-valued mapping keys such as ``[0, 1]:``).
"""

from __future__ import annotations

from ...errors import ModelFileError
from ...symbolic.clebsch_gordan import clebsch_gordan, coupling_tree
from .ace import read_ace
from .bbasis import bbasis_to_ctilde, read_bbasis_yaml
from .model import (
    EMBEDDINGS,
    INNER_CUTOFF_TYPES,
    RADIAL_BASES,
    BBasisPotential,
    BFunctionSpec,
    BRadialSpec,
    BSpeciesBlock,
    PaceBond,
    PaceEmbedding,
    PaceFunction,
    PacePotential,
)
from .bbasis_writer import write_bbasis_yaml
from .writer import write_yace
from .yace import read_yace

__all__ = [
    "RADIAL_BASES",
    "EMBEDDINGS",
    "INNER_CUTOFF_TYPES",
    "PaceEmbedding",
    "PaceBond",
    "PaceFunction",
    "PacePotential",
    "BRadialSpec",
    "BFunctionSpec",
    "BSpeciesBlock",
    "BBasisPotential",
    "read_yace",
    "read_ace",
    "read_bbasis_yaml",
    "read_pace",
    "bbasis_to_ctilde",
    "write_yace",
    "write_bbasis_yaml",
    "clebsch_gordan",
    "coupling_tree",
]


def read_pace(path) -> PacePotential:
    """Read any PACE potential by extension: ``.yace``, ``.ace`` or B-basis ``.yaml``
    (converted to C-tilde with :func:`bbasis_to_ctilde`)."""
    p = str(path)
    low = p.lower()
    if low.endswith(".yace"):
        return read_yace(p)
    if low.endswith(".ace"):
        return read_ace(p)
    if low.endswith(".yaml") or low.endswith(".yml"):
        return bbasis_to_ctilde(read_bbasis_yaml(p))
    raise ModelFileError(p, None, "unknown PACE file type (expected .yace, .ace or .yaml)")
