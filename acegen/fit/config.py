"""The YAML fit configuration read by ``acegen fit CONFIG`` / :func:`acegen.fit.fit_from_config`.

Schema (relative output paths are relative to the config file's folder; relative data paths
are looked up in the data folder, then in the config file's folder)::

    basis:                      # required: acegen.BasisSpec(**basis)
      elements: [Ti, Al]
      order: 3
      totaldegree: [12, 10, 8]
      rcut: 5.5
    # or, in place of basis, a multilayer model (acegen.MultilayerSpec.from_dict; solver lm or lbfgs):
    # multilayer:
    #   layers: [{elements: [Cu], order: 3, totaldegree: 8, rcut: 5.0},
    #            {elements: [Cu], order: 2, totaldegree: 6, rcut: 5.0, purification: none}]
    #   kmax: 2
    #   k0max: 1
    data:
      directory: ../data        # optional: the data folder (relative to the config's folder)
      train: train.xyz          # required: a path or a list of paths
      test: test.xyz            # optional
      energy_key: energy        # null skips the observation
      force_key: force
      virial_key: virial        # or stress_key: stress (converted with V = -stress * volume)
      config_type_key: config_type
      eref: {Ti: -1586.0195, Al: -105.5954}   # or isolated | average | zero | null
      missing: error            # or skip
      weight_keys: {E: w_energy, F: w_forces}  # optional per-structure weights stored with the data
    weights:                    # optional, per config type (default: E 30, F 1, V 1)
      default: {E: 30, F: 1, V: 1}
      TiAl_T5000: {E: 5}
    solver: blr                 # or {name: blr, tol: 1e-6} / {name: qr, lam: 1e-3} ...
    embedding: FinnisSinclairShiftedScaled   # optional: a non-linear Finnis–Sinclair fit
    ndensity: 2                 #   with 2 densities (embedding_params: [1, 1, 1, 0.5] by default)
                                #   and solver: lm (or {name: lm, max_iter: 100, init_solver: blr}, lbfgs)
    prior: {kind: algebraic, p: 4, wL: 1.0}   # or a kind name, or none
    committee: {size: 32, seed: 0}            # optional (blr / ard only)
    output:
      directory: fit_out        # default: the config's folder
      model: model.json         # acegen JSON (null: not written)
      yace: model.yace          # optional
      errors: [errors.json, errors.csv]
      plots: true               # parity plots (+ dimer curves) as PNG
    progress: true
    assembly:                   # optional (acegen.fit.driver.fit_linear)
      streaming: true           # false: the whole design matrix in memory
      block_size: 32            # structures per block
      workers: 1                # worker processes on this machine
      scheduler: tcp://host:8786   # or a dask.distributed scheduler (then workers is ignored)
      resume: true              # or a folder: checkpoint and resume the assembly

The data folder is, first found: the ``data_dir`` argument (``acegen fit --data-dir DIR``),
the environment variable ``ACEGEN_DATA``, ``data.directory``.  A relative ``train`` / ``test``
path is the file under the data folder if it exists there, else the file relative to the config
file's folder, so configs written for either layout keep working.

Every problem is a :class:`acegen.fit.ConfigError` naming the file and the field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["FitConfig", "load_config", "parse_config"]

_TOP = {"basis", "multilayer", "data", "weights", "solver", "prior", "committee", "output", "progress", "assembly", "embedding",
        "ndensity", "embedding_params"}
DATA_ENV = "ACEGEN_DATA"

_DATA = {"directory", "train", "test", "energy_key", "force_key", "virial_key", "stress_key", "config_type_key", "eref",
         "missing", "weight_keys"}
_ASSEMBLY = {"streaming", "block_size", "workers", "scheduler", "resume"}
_OUTPUT = {"directory", "model", "yace", "errors", "plots"}


@dataclass
class FitConfig:
    """A parsed, validated fit configuration (paths resolved)."""

    path: Path | None
    basis: dict[str, Any]
    train: list[Path]
    data_dir: Path | None = None
    test: list[Path] = field(default_factory=list)
    energy_key: str | None = "energy"
    force_key: str | None = "forces"
    virial_key: str | None = None
    stress_key: str | None = None
    config_type_key: str = "config_type"
    eref: Any = None
    missing: str = "error"
    weights: dict[str, dict[str, float]] | None = None
    solver: str = "blr"
    solver_options: dict[str, Any] = field(default_factory=dict)
    prior: Any = "algebraic"
    committee: dict[str, Any] | None = None
    output_dir: Path = Path(".")
    model_path: Path | None = None
    yace_path: Path | None = None
    error_paths: list[Path] = field(default_factory=list)
    plots: bool = False
    progress: bool | None = None
    weight_keys: dict[str, str] | str | None = None
    streaming: bool = True
    block_size: int = 32
    workers: int = 1
    scheduler: str | None = None
    resume: bool | Path = False
    embedding: str | None = None
    ndensity: int | None = None
    embedding_params: tuple[float, ...] | None = None
    #: the ``multilayer`` mapping (acegen.MultilayerSpec.from_dict), or None for a ``basis`` fit
    multilayer: dict[str, Any] | None = None


def load_config(path: str | Path, *, data_dir: str | Path | None = None) -> FitConfig:
    """Read and validate a YAML fit configuration (``data_dir``: the data folder, module
    docstring)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, None, "no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(path, None, f"not valid YAML: {e}") from None
    return parse_config(raw, path, data_dir=data_dir)


def _mapping(path, name: str, v: Any) -> dict:
    if not isinstance(v, Mapping):
        raise ConfigError(path, name, f"expected a mapping, got {type(v).__name__}")
    return dict(v)


def _unknown(path, prefix: str, d: Mapping, allowed: set[str]) -> None:
    bad = sorted(str(k) for k in d if k not in allowed)
    if bad:
        raise ConfigError(path, f"{prefix}{bad[0]}", f"unknown field (allowed: {sorted(allowed)})")


def _key(path, name: str, v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise ConfigError(path, name, f"expected a string or null, got {v!r}")


def _paths(path, base: Path, name: str, v: Any, required: bool, data_dir: Path | None = None) -> list[Path]:
    if v is None:
        if required:
            raise ConfigError(path, name, "missing (a structure file or a list of them)")
        return []
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items or not all(isinstance(p, str) for p in items):
        raise ConfigError(path, name, f"expected a path or a non-empty list of paths, got {v!r}")
    out = []
    for p in items:
        q = Path(p).expanduser()
        tried = [q] if q.is_absolute() else [d / q for d in (data_dir, base) if d is not None]
        found = next((t for t in tried if t.is_file()), None)
        if found is None:
            raise ConfigError(path, name, "no such file: " + " or ".join(str(t) for t in tried)
                              + ("" if data_dir is not None or q.is_absolute()
                                 else f" (set the data folder with --data-dir or {DATA_ENV})"))
        out.append(found)
    return out


def _out_path(path, base: Path, name: str, v: Any) -> Path | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise ConfigError(path, name, f"expected a path or null, got {v!r}")
    q = Path(v).expanduser()
    return q if q.is_absolute() else base / q


def _embedding(cfg: FitConfig, top: Mapping, path, solver_is_name: bool) -> None:
    """``embedding``, ``ndensity``, ``embedding_params`` (a non-linear Finnis–Sinclair fit,
    which needs ``solver`` lm or lbfgs)."""
    from ..model import FS_EMBEDDINGS
    from .nonlinear import NONLINEAR_SOLVERS

    emb = top.get("embedding")
    if emb is not None and emb != "linear" and emb not in FS_EMBEDDINGS:
        raise ConfigError(path, "embedding", f"expected linear or one of {list(FS_EMBEDDINGS)}, got {emb!r}")
    nonlinear = emb not in (None, "linear")
    nd = top.get("ndensity")
    if nd is not None and (isinstance(nd, bool) or not isinstance(nd, int) or not 1 <= nd <= 8):
        raise ConfigError(path, "ndensity", f"expected an integer in 1..8, got {nd!r}")
    ep = top.get("embedding_params")
    if ep is not None:
        if not (isinstance(ep, list) and ep and len(ep) % 2 == 0
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in ep)):
            raise ConfigError(path, "embedding_params", f"expected a list [w_0, m_0, w_1, m_1, ...], got {ep!r}")
        if nd is not None and nd != len(ep) // 2:
            raise ConfigError(path, "embedding_params", f"{len(ep) // 2} (w, m) pairs but ndensity is {nd}")
        ep = tuple(float(x) for x in ep)
    if not nonlinear and ((nd is not None and nd != 1) or ep is not None):
        raise ConfigError(path, "ndensity" if ep is None else "embedding_params",
                          "needs a non-linear embedding (embedding: FinnisSinclairShiftedScaled or FinnisSinclair)")
    sfield = "solver" if solver_is_name else "solver.name"
    if nonlinear and cfg.solver not in NONLINEAR_SOLVERS:
        raise ConfigError(path, sfield, f"a Finnis-Sinclair fit (embedding {emb}) needs solver lm or lbfgs, "
                                        f"got {cfg.solver!r}")
    if cfg.multilayer is not None:
        if emb is not None or nd is not None or ep is not None:
            raise ConfigError(path, "embedding", "a multilayer fit takes its embedding from the multilayer spec")
        if cfg.solver not in NONLINEAR_SOLVERS and cfg.solver != "blr":
            raise ConfigError(path, sfield, f"a multilayer fit needs solver lm or lbfgs, got {cfg.solver!r}")
        return
    if not nonlinear and cfg.solver in NONLINEAR_SOLVERS:
        raise ConfigError(path, sfield, f"solver {cfg.solver} fits non-linear models: set embedding "
                                        "(FinnisSinclairShiftedScaled or FinnisSinclair) and ndensity")
    cfg.embedding = emb if nonlinear else None
    cfg.ndensity = nd
    cfg.embedding_params = ep


def parse_config(raw: Any, path: str | Path | None = None, *, data_dir: str | Path | None = None) -> FitConfig:
    """Validate an already-loaded config mapping (``path`` only names it in errors and is the
    base for relative paths; ``data_dir``: the data folder, module docstring)."""
    path = None if path is None else Path(path)
    base = path.parent if path is not None else Path(".")
    top = _mapping(path, "", raw) if raw is not None else {}
    _unknown(path, "", top, _TOP)
    multilayer = None
    if "multilayer" in top:
        if "basis" in top:
            raise ConfigError(path, "multilayer", "give either basis or multilayer, not both")
        multilayer = _mapping(path, "multilayer", top["multilayer"])
        if not isinstance(multilayer.get("layers"), list) or not multilayer["layers"]:
            raise ConfigError(path, "multilayer.layers", "missing or not a list of acegen.BasisSpec field mappings")
        for n, ld in enumerate(multilayer["layers"]):
            _mapping(path, f"multilayer.layers[{n}]", ld)
        basis = {}
    elif "basis" not in top:
        raise ConfigError(path, "basis", "missing (the acegen.BasisSpec fields)")
    else:
        basis = _mapping(path, "basis", top["basis"])
    if "data" not in top:
        raise ConfigError(path, "data", "missing (at least data.train)")
    data = _mapping(path, "data", top["data"])
    _unknown(path, "data.", data, _DATA)
    ddir, field_name = data_dir, "--data-dir"
    if ddir is None and os.environ.get(DATA_ENV):
        ddir, field_name = os.environ[DATA_ENV], DATA_ENV
    if ddir is None and data.get("directory") is not None:
        if not isinstance(data["directory"], str):
            raise ConfigError(path, "data.directory", f"expected a path, got {data['directory']!r}")
        ddir, field_name = data["directory"], "data.directory"
    if ddir is not None:
        ddir = Path(ddir).expanduser()
        if not ddir.is_absolute():  # the option and the variable: from the working folder
            ddir = base / ddir if field_name == "data.directory" else ddir.absolute()
        ddir = Path(os.path.normpath(ddir))
        if not ddir.is_dir():
            raise ConfigError(path, "data.directory", f"the data folder ({field_name}) {ddir} is not a folder")
    cfg = FitConfig(path=path, basis=basis, data_dir=ddir,
                    train=_paths(path, base, "data.train", data.get("train"), True, ddir), multilayer=multilayer)
    cfg.test = _paths(path, base, "data.test", data.get("test"), False, ddir)
    for k in ("energy_key", "force_key", "virial_key", "stress_key"):
        if k in data:
            setattr(cfg, k, _key(path, f"data.{k}", data[k]))
    if "config_type_key" in data:
        ct = _key(path, "data.config_type_key", data["config_type_key"])
        if ct is None:
            raise ConfigError(path, "data.config_type_key", "must be a string")
        cfg.config_type_key = ct
    eref = data.get("eref")
    if eref is not None and not (isinstance(eref, Mapping) or eref in ("isolated", "average", "zero")):
        raise ConfigError(path, "data.eref", f"expected a mapping element -> energy, isolated, average or zero, "
                                             f"got {eref!r}")
    if isinstance(eref, Mapping):
        for el, v in eref.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(path, f"data.eref.{el}", f"expected a number, got {v!r}")
        eref = dict(eref)
    cfg.eref = eref
    missing = data.get("missing", "error")
    if missing not in ("error", "skip"):
        raise ConfigError(path, "data.missing", f"expected error or skip, got {missing!r}")
    cfg.missing = missing

    if top.get("weights") is not None:
        w = _mapping(path, "weights", top["weights"])
        for ct, entry in w.items():
            e = _mapping(path, f"weights.{ct}", entry)
            for q, v in e.items():
                if q not in ("E", "F", "V"):
                    raise ConfigError(path, f"weights.{ct}.{q}", "unknown observation (expected E, F or V)")
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    raise ConfigError(path, f"weights.{ct}.{q}", f"expected a number >= 0, got {v!r}")
        cfg.weights = {str(k): dict(v) for k, v in w.items()}

    solver = top.get("solver", "blr")
    if isinstance(solver, str):
        cfg.solver = solver
    else:
        s = _mapping(path, "solver", solver)
        name = s.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(path, "solver.name", f"missing or not a string: {name!r}")
        cfg.solver, cfg.solver_options = name, s
    from .nonlinear import NONLINEAR_SOLVERS
    from .solvers import SOLVERS

    if cfg.solver not in SOLVERS and cfg.solver not in NONLINEAR_SOLVERS:
        raise ConfigError(path, "solver" if isinstance(solver, str) else "solver.name",
                          f"unknown solver {cfg.solver!r} (one of {sorted(SOLVERS) + list(NONLINEAR_SOLVERS)})")
    _embedding(cfg, top, path, isinstance(solver, str))

    prior = top.get("prior", "algebraic")
    from .priors import PRIOR_KINDS, PRIOR_PARAMS

    if prior is None or isinstance(prior, str):
        kind = "none" if prior is None else prior
        if kind not in PRIOR_KINDS:
            raise ConfigError(path, "prior", f"unknown prior {kind!r} (one of {list(PRIOR_KINDS)})")
        cfg.prior = kind
    else:
        p = _mapping(path, "prior", prior)
        kind = p.get("kind", "algebraic")
        if kind not in PRIOR_KINDS:
            raise ConfigError(path, "prior.kind", f"unknown prior {kind!r} (one of {list(PRIOR_KINDS)})")
        _unknown(path, "prior.", p, {"kind", *PRIOR_PARAMS[kind]})
        for k, v in p.items():
            if k != "kind" and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ConfigError(path, f"prior.{k}", f"expected a number, got {v!r}")
        cfg.prior = p

    if top.get("committee") is not None:
        c = _mapping(path, "committee", top["committee"])
        _unknown(path, "committee.", c, {"size", "seed"})
        size = c.get("size", 32)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(path, "committee.size", f"expected an integer >= 1, got {size!r}")
        seed = c.get("seed", 0)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(path, "committee.seed", f"expected an integer or null, got {seed!r}")
        cfg.committee = {"size": size, "seed": seed}

    out = _mapping(path, "output", top["output"]) if top.get("output") is not None else {}
    _unknown(path, "output.", out, _OUTPUT)
    od = out.get("directory")
    cfg.output_dir = base if od is None else _out_path(path, base, "output.directory", od)
    cfg.model_path = _out_path(path, cfg.output_dir, "output.model", out.get("model", "model.json"))
    cfg.yace_path = _out_path(path, cfg.output_dir, "output.yace", out.get("yace"))
    errs = out.get("errors", ["errors.json", "errors.csv"])
    errs = [errs] if isinstance(errs, str) else errs
    if not isinstance(errs, list):
        raise ConfigError(path, "output.errors", f"expected a path or a list of paths, got {errs!r}")
    cfg.error_paths = [_out_path(path, cfg.output_dir, "output.errors", e) for e in errs]
    for e in cfg.error_paths:
        if e.suffix not in (".json", ".csv"):
            raise ConfigError(path, "output.errors", f"{e.name}: error tables are .json or .csv")
    plots = out.get("plots", False)
    if not isinstance(plots, bool):
        raise ConfigError(path, "output.plots", f"expected true or false, got {plots!r}")
    cfg.plots = plots
    progress = top.get("progress")
    if progress is not None and not isinstance(progress, bool):
        raise ConfigError(path, "progress", f"expected true, false or null, got {progress!r}")
    cfg.progress = progress

    wk = data.get("weight_keys")
    if wk is not None:
        if isinstance(wk, Mapping):
            for q, k in wk.items():
                if q not in ("E", "F", "V"):
                    raise ConfigError(path, f"data.weight_keys.{q}", "unknown observation (expected E, F or V)")
                if not isinstance(k, str):
                    raise ConfigError(path, f"data.weight_keys.{q}", f"expected a key name, got {k!r}")
            wk = dict(wk)
        elif not isinstance(wk, str):
            raise ConfigError(path, "data.weight_keys", f"expected a key or a mapping E/F/V -> key, got {wk!r}")
    cfg.weight_keys = wk

    asm = _mapping(path, "assembly", top["assembly"]) if top.get("assembly") is not None else {}
    _unknown(path, "assembly.", asm, _ASSEMBLY)
    for k in ("block_size", "workers"):
        v = asm.get(k, getattr(cfg, k))
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(path, f"assembly.{k}", f"expected an integer >= 1, got {v!r}")
        setattr(cfg, k, v)
    streaming = asm.get("streaming", True)
    if not isinstance(streaming, bool):
        raise ConfigError(path, "assembly.streaming", f"expected true or false, got {streaming!r}")
    cfg.streaming = streaming
    sched = asm.get("scheduler")
    if sched is not None and not isinstance(sched, str):
        raise ConfigError(path, "assembly.scheduler", f"expected a scheduler address, got {sched!r}")
    cfg.scheduler = sched
    resume = asm.get("resume", False)
    if isinstance(resume, str):
        resume = _out_path(path, base, "assembly.resume", resume)
    elif not isinstance(resume, bool):
        raise ConfigError(path, "assembly.resume", f"expected true, false or a folder, got {resume!r}")
    cfg.resume = resume
    return cfg
