"""``acegen.fit(spec, structures, ...)`` and ``fit_from_config(path)``: data → design matrix →
prior → solver → :class:`acegen.Model`.

The basis enters only through a *basis evaluator* (see :func:`acegen.fit.data.assemble`):
``basis_evaluator(atoms) -> {"energy": (P,), "forces": (n, 3, P), "virial": (3, 3, P)}``, the
derivatives of the total energy, forces and virial with respect to the P linear parameters
(many-body functions, then the pair basis, the order of ``CoupledBasis.split_params``).
:func:`make_basis_evaluator` builds it for a lowered basis; any callable with that contract
can be passed as ``basis_evaluator=``.

Reference energies: the model's one-body term is ``BasisSpec.Eref``; the fit subtracts
Σ_i E0[Z_i] from every energy and the returned model carries the E0 actually used
(precedence: the ``eref`` argument, then a nonzero ``spec.Eref``, then isolated-atom
structures in the data, else 0 with a warning).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, FitError
from .data import LazyTrainingSet, RowMeta, TrainingSet, assemble, load_training_set
from .errors_table import error_table, save_error_table
from .evaluator import BasisEvaluator, make_basis_evaluator
from .priors import prior_gamma
from .solvers import Committee, FitResult, solve, solve_compressed

DEFAULT_BLOCK_SIZE = 32

__all__ = ["FitReport", "fit", "fit_from_config", "fit_linear", "make_basis_evaluator", "score"]



@dataclass
class FitReport:
    """Everything a fit produced: coefficients, the solver's :class:`FitResult`, the training
    set and row meta, per-row targets ``y`` (E − ΣE0, F, V) and predictions ``A·c`` (None
    when the fit ran with ``keep_rows=False``), the training error table, the prior weights,
    an optional committee and timings (s); ``n_rows``: the number of rows."""

    coefficients: np.ndarray
    result: FitResult
    training_set: TrainingSet | LazyTrainingSet
    meta: RowMeta | None
    y: np.ndarray | None
    predictions: np.ndarray | None
    errors: dict[str, Any]
    gamma: np.ndarray | None
    committee: Committee | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: test set scores (``acegen.fit(..., test=...)``): error table, row meta, predictions, targets
    test_errors: dict[str, Any] | None = None
    test_meta: RowMeta | None = None
    test_predictions: np.ndarray | None = None
    test_y: np.ndarray | None = None
    #: the basis evaluator the fit used (for test sets, dimer curves)
    basis_evaluator: Any = None
    #: rows of the design matrix (targets of positive or zero weight)
    n_rows: int = 0
    #: non-linear fits: the training error table of the linear fit they started from
    linear_errors: dict[str, Any] | None = None

    @property
    def n_params(self) -> int:
        return len(self.coefficients)


def fit_linear(training_set: TrainingSet | LazyTrainingSet, basis_evaluator: BasisEvaluator, *, solver: str = "blr",
               solver_options: Mapping[str, Any] | None = None, gamma: np.ndarray | None = None,
               committee: Mapping[str, Any] | None = None, progress: bool | None = None,
               streaming: bool = True, block_size: int = DEFAULT_BLOCK_SIZE, workers: int = 1, client=None,
               resume: bool | str | Path = False, signature: str | None = None,
               callback: Callable[[int, int], None] | None = None, keep_rows: bool | None = None) -> FitReport:
    """Assemble, solve and score a linear fit (no basis or model object needed).

    ``gamma``: prior weights (None: Γ = I); ``committee``: ``{"size": K, "seed": s}`` to
    sample a posterior committee (BLR/ARD).

    ``streaming`` (default): the design matrix is built ``block_size`` structures at a time
    and folded into its triangular factor (:mod:`acegen.fit.stream`; memory O(M² + one
    block)), by ``workers`` forked processes or on a ``dask.distributed`` ``client``; the
    error table is a second streamed pass (the basis is evaluated twice).  ``resume``: True
    (the user cache folder) or a folder: checkpoint the fold and resume an interrupted
    assembly; needs ``signature`` (or a ``signature`` attribute of the evaluator) naming the
    basis.  ``callback(block, n_blocks)`` runs after each folded block.  ``keep_rows``
    (streaming only): keep the per-row targets, predictions and row meta in the report (for
    parity plots); False: the error table is accumulated block by block and nothing per row
    is kept (memory independent of the data size); None (default): keep them only for sets
    of at most :data:`KEEP_ROWS_LIMIT` rows.  ``streaming=False`` assembles the whole
    matrix in memory (one QR)."""
    if not streaming:
        t0 = time.perf_counter()
        A, y, w, meta = assemble(basis_evaluator, training_set, progress=progress)
        t1 = time.perf_counter()
        result = solve(A, y, w, solver=solver, gamma=gamma, **dict(solver_options or {}))
        t2 = time.perf_counter()
        pred = A @ result.coefficients
        com = Committee.sample(result, **dict(committee)) if committee else None
        return FitReport(result.coefficients, result, training_set, meta, y, pred, error_table(pred - y, meta),
                         gamma, com, {"assemble": t1 - t0, "solve": t2 - t1}, n_rows=len(meta))
    from .stream import Checkpoint, checkpoint_key, compress_stream, default_checkpoint_dir

    ckpt = None
    if resume:
        sig = signature if signature is not None else getattr(basis_evaluator, "signature", None)
        if not isinstance(sig, str):
            raise FitError("resume needs a basis signature: pass signature=... (or a basis, to acegen.fit)")
        folder = default_checkpoint_dir() if resume is True else Path(resume)
        ckpt = Checkpoint(folder, checkpoint_key(training_set, sig, block_size))
    t0 = time.perf_counter()
    comp, info = compress_stream(basis_evaluator, training_set, block_size=block_size, workers=workers,
                                 client=client, checkpoint=ckpt, progress=progress, callback=callback)
    t1 = time.perf_counter()
    from ..progress import status

    with status(f"solving the fit ({comp.n_obs} rows x {comp.R_aug.shape[1] - 1} parameters, {solver})",
                quiet=None if progress is None else not progress):
        result = solve_compressed(comp.R_aug, comp.n_obs, comp.log_w, solver=solver, gamma=gamma,
                                  **dict(solver_options or {}))
    result.info["assembly"] = info
    t2 = time.perf_counter()
    errors, meta, pred, y = score(basis_evaluator, training_set, result.coefficients, progress=progress,
                                  block_size=block_size, workers=workers, client=client,
                                  keep_rows=_keep_rows(keep_rows, training_set))
    t3 = time.perf_counter()
    com = Committee.sample(result, **dict(committee)) if committee else None
    n_rows = len(meta) if meta is not None else sum(g["n"] for g in (errors["set"][q] for q in "EFV") if g)
    return FitReport(result.coefficients, result, training_set, meta, y, pred, errors,
                     gamma, com, {"assemble": t1 - t0, "solve": t2 - t1, "errors": t3 - t2}, n_rows=n_rows)


#: Above this many rows (energies + force components + virials; about 50 bytes each) a
#: streamed fit keeps no per-row arrays unless asked (``keep_rows=True``): memory stays
#: independent of the data size; the error tables are accumulated block by block.
KEEP_ROWS_LIMIT = 2_000_000


def _keep_rows(keep_rows: bool | None, ts) -> bool:
    """``keep_rows`` as asked, or (None) whether the set is small enough to keep its rows."""
    if keep_rows is not None:
        return bool(keep_rows)
    n_struct = len(ts)
    return 3 * int(ts.n_atoms_total) + 7 * n_struct <= KEEP_ROWS_LIMIT


def _spec_eref(spec) -> dict[str, float] | None:
    """``spec.Eref`` (stored as ((element, E0), ...)) as a dict, or None when all zero."""
    eref = dict(spec.Eref)
    return eref if any(v != 0.0 for v in eref.values()) else None


def score(basis_evaluator: BasisEvaluator, training_set: TrainingSet | LazyTrainingSet, coefficients: np.ndarray, *,
          progress: bool | None = None, streaming: bool = True, block_size: int = DEFAULT_BLOCK_SIZE,
          workers: int = 1, client=None, keep_rows: bool | None = None) -> tuple[dict, RowMeta, np.ndarray, np.ndarray]:
    """Error table, row meta, predictions ``A·c`` and targets of ``coefficients`` on a data
    set (the test-set scoring of :func:`fit` and ``fit_from_config``); ``streaming``: block by
    block (:func:`acegen.fit.stream.predict_stream`), else one design matrix in memory.
    ``keep_rows=False`` (streaming): only the error table, accumulated block by block
    (:func:`acegen.fit.stream.error_stream`), and None for the rest."""
    if streaming and not _keep_rows(keep_rows, training_set):
        from .stream import error_stream

        table, _ = error_stream(basis_evaluator, training_set, coefficients, block_size=block_size,
                                workers=workers, client=client, progress=progress)
        return table, None, None, None
    if streaming:
        from .stream import predict_stream

        pred, y, meta = predict_stream(basis_evaluator, training_set, coefficients, block_size=block_size,
                                       workers=workers, client=client, progress=progress)
    else:
        A, y, _, meta = assemble(basis_evaluator, training_set, progress=progress)
        pred = A @ coefficients
    return error_table(pred - y, meta), meta, pred, y


def fit(spec, structures: Sequence | str | Path, *, energy_key: str | None = "energy",
        force_key: str | None = "forces", virial_key: str | None = None, stress_key: str | None = None,
        config_type_key: str = "config_type", weights: Mapping[str, Mapping[str, float]] | None = None,
        solver: str = "blr", solver_options: Mapping[str, Any] | None = None, prior: Any = "algebraic",
        eref: Mapping[str, float] | str | None = None, missing: str = "error",
        committee: Mapping[str, Any] | None = None, basis=None, basis_evaluator: BasisEvaluator | None = None,
        progress: bool | None = None, name: str | None = None, test: Sequence | str | Path | None = None,
        verbose: bool = False, weight_keys: Mapping[str, str] | str | None = None,
        streaming: bool = True, block_size: int = DEFAULT_BLOCK_SIZE, workers: int = 1, client=None,
        resume: bool | str | Path = False, callback: Callable[[int, int], None] | None = None,
        keep_rows: bool | None = None, embedding: str | None = None, ndensity: int | None = None,
        embedding_params: Sequence[float] | None = None):
    """Fit a linear ACE model on ``acegen.lower(spec)`` and return an :class:`acegen.Model`
    (with ``embedding``: a Finnis–Sinclair :class:`acegen.FSModel`, see below).

    ``structures``: ASE Atoms, or extxyz path(s).  Keys, ``weights``, ``eref`` and
    ``missing``: :func:`acegen.fit.data.load_training_set`.  ``solver`` / ``solver_options``:
    :func:`acegen.fit.solvers.solve`.  ``prior``: a kind name, ``{"kind": ..., **params}``
    (:mod:`acegen.fit.priors`), an array of weights, or None.  ``basis`` (a lowered basis) and
    ``basis_evaluator`` default to ``acegen.lower(spec)`` and :func:`make_basis_evaluator`
    (built lazily in each worker process).  ``committee``: ``{"size": K, "seed": s}`` samples K
    posterior parameter vectors (BLR, ARD), kept on the model (``model.committee``, saved with
    it).  ``test``: held-out structures or extxyz path(s), read with the same keys, weights and
    reference energies and scored with the fitted coefficients.  ``weight_keys``: per-structure
    weights stored with the data (:func:`acegen.fit.data.load_training_set`).  ``streaming``,
    ``block_size``, ``workers``, ``client`` (a ``dask.distributed.Client``), ``resume`` and
    ``callback`` and ``keep_rows``: :func:`fit_linear`.  The returned model carries ``provenance``
    (:mod:`acegen.fit.provenance`: data files and sha256, settings, solver state, the
    ``errors`` tables ``train`` and ``test``, saved with it) and ``fit_report`` (the
    :class:`FitReport`).  ``verbose``: print the fit log.  ``name``: the model's name; by
    default the model is named after the file it is saved to.

    Non-linear (Finnis–Sinclair) fits: ``embedding`` ``"FinnisSinclairShiftedScaled"`` or
    ``"FinnisSinclair"`` with ``ndensity`` P densities and ``embedding_params`` (w_0, m_0, …)
    (default: :func:`acegen.fit.fs.default_embedding_params`), ``solver`` ``"lm"``
    (Levenberg–Marquardt) or ``"lbfgs"``; ``solver_options``: ``max_iter``, ``tol``, ``lam``
    (default: the λ of the linear start), ``init_solver`` / ``init_options`` (the linear fit
    that gives the start, default BLR), ``max_jacobian_gib``, ``cache_gib``
    (:mod:`acegen.fit.fs`, :mod:`acegen.fit.nonlinear`).  Returns an :class:`acegen.FSModel`;
    the training errors of the linear start are in ``fit_report.linear_errors`` and in the
    provenance's ``errors``.  No committee.

    Multilayer fits: ``spec`` an :class:`acegen.MultilayerSpec` (linear embedding) fits every
    layer jointly (:func:`fit_multilayer`, docs/multilayer.md) and returns
    an :class:`acegen.MultilayerModel`; ``solver`` ``"lm"`` (also what the default ``"blr"``
    means there: LM from BLR linear starts) or ``"lbfgs"``.
    """
    from ..multilayer.spec import MultilayerSpec
    from ..spec import BasisSpec
    from .nonlinear import NONLINEAR_SOLVERS

    if isinstance(spec, MultilayerSpec):
        extra = {"committee": committee, "basis": basis, "basis_evaluator": basis_evaluator, "client": client,
                 "resume": resume, "callback": callback, "embedding": embedding, "ndensity": ndensity,
                 "embedding_params": embedding_params, "workers": workers != 1}
        given = [k for k, v in extra.items() if v not in (None, False)]
        if given:
            raise FitError(f"fit: {given[0]!r} is not available for a multilayer spec (the embedding is the spec's)")
        return fit_multilayer(spec, structures, energy_key=energy_key, force_key=force_key, virial_key=virial_key,
                              stress_key=stress_key, config_type_key=config_type_key, weights=weights,
                              solver="lm" if solver == "blr" else solver, solver_options=solver_options,
                              prior=prior, eref=eref, missing=missing, progress=progress, name=name, test=test,
                              verbose=verbose, weight_keys=weight_keys, block_size=block_size)
    if not isinstance(spec, BasisSpec):
        raise FitError(f"fit: spec must be an acegen.BasisSpec, got {type(spec).__name__}")
    nonlinear = embedding not in (None, "linear")
    if not nonlinear and (ndensity not in (None, 1) or embedding_params is not None):
        raise FitError("ndensity > 1 and embedding_params need a non-linear embedding "
                       "(embedding='FinnisSinclairShiftedScaled' or 'FinnisSinclair')")
    if not nonlinear and solver in NONLINEAR_SOLVERS:
        raise FitError(f"solver {solver!r} fits non-linear models: pass embedding='FinnisSinclairShiftedScaled' "
                       "(or 'FinnisSinclair') and ndensity; a linear fit takes qr, lsqr, rrqr, blr or ard")
    if nonlinear and committee:
        raise FitError("a non-linear (Finnis-Sinclair) fit has no committee")
    if eref is None:
        eref = _spec_eref(spec)
    # structure files are read lazily when streaming (scanned once, then read block by block)
    lazy = None if streaming else False
    ts = load_training_set(structures, energy_key=energy_key, force_key=force_key, virial_key=virial_key, lazy=lazy,
                           stress_key=stress_key, config_type_key=config_type_key, weights=weights, eref=eref,
                           elements=spec.elements, missing=missing, weight_keys=weight_keys)
    e0 = {el: float(ts.eref.get(el, 0.0)) for el in spec.elements}
    if e0 != dict(spec.Eref):
        spec = dataclasses.replace(spec, Eref=e0)
    if basis is None:
        from ..basis import lower

        basis = lower(spec)
    signature = getattr(basis_evaluator, "signature", None)
    if basis_evaluator is None:
        from .stream import LazyBasisEvaluator

        basis_evaluator = LazyBasisEvaluator(basis, forces=ts.has_forces, virial=ts.has_virials)
        signature = basis_evaluator.signature
    elif not isinstance(signature, str) and callable(getattr(basis, "signature", None)):
        signature = f"{basis.signature()}|{type(basis_evaluator).__qualname__}"
    gamma = prior_gamma(prior, basis, basis.n_params)
    fs = None
    if nonlinear:
        coefficients, report, fs = _fit_fs(
            spec, basis, ts, basis_evaluator, embedding=embedding, ndensity=ndensity,
            embedding_params=embedding_params, solver=solver, solver_options=solver_options, gamma=gamma,
            progress=progress, block_size=block_size, streaming=streaming, workers=workers, client=client,
            resume=resume, signature=signature)
    else:
        report = fit_linear(ts, basis_evaluator, solver=solver, solver_options=solver_options, gamma=gamma,
                            committee=committee, progress=progress, streaming=streaming, block_size=block_size,
                            workers=workers, client=client, resume=resume, signature=signature, callback=callback,
                            keep_rows=keep_rows)
        report.basis_evaluator = basis_evaluator
    keys = {"energy_key": energy_key, "force_key": force_key, "virial_key": virial_key, "stress_key": stress_key,
            "config_type_key": config_type_key, "missing": missing}
    test_set = None
    errors = {"train": report.errors}
    if test is not None:
        t0 = time.perf_counter()
        test_set = load_training_set(test, **keys, weights=weights, eref=ts.eref or "zero",
                                     elements=spec.elements, weight_keys=weight_keys, lazy=lazy)
        if fs is not None:
            from .fs import score_fs

            scored = score_fs(report.basis_evaluator, test_set, report.result.coefficients, block_size)
        else:
            scored = score(basis_evaluator, test_set, report.coefficients, progress=progress, streaming=streaming,
                           block_size=block_size, workers=workers, client=client, keep_rows=keep_rows)
        report.test_errors, report.test_meta, report.test_predictions, report.test_y = scored
        errors["test"] = report.test_errors
        report.timings["test"] = time.perf_counter() - t0
    if report.linear_errors is not None:
        errors["train (linear start)"] = report.linear_errors
    from .provenance import build_provenance, format_fit_log

    provenance = build_provenance(
        spec=spec, train=structures, test=test, training_set=ts, test_set=test_set, keys=keys, weights=weights,
        solver=solver, solver_options=solver_options, prior=prior, committee=committee, result=report.result,
        errors=errors, timings=report.timings, n_rows=report.n_rows)
    from ..model import FSModel, Model

    if fs is not None:
        provenance["settings"]["embedding"] = {"kind": fs[0], "params": list(fs[1])}
        model = FSModel(spec, report.coefficients, embedding=fs[0], embedding_params=fs[1], name=name)
    else:
        model = Model(spec, report.coefficients, name=name)
    model.fit_report = report
    model.provenance = provenance
    if report.committee is not None:
        model.committee = report.committee.members.copy()
    if verbose:
        print(format_fit_log(provenance))
    return model


def _fit_fs(spec, basis, ts, basis_evaluator, *, embedding: str, ndensity: int | None, embedding_params,
           solver: str, solver_options, gamma, progress, block_size: int, streaming: bool, workers: int, client,
           resume, signature):
    """The non-linear Finnis–Sinclair fit of :func:`fit` (docs/fitting.md): a linear fit
    (``init_solver``, default BLR, through :func:`fit_linear`) gives c_0 and λ,
    then :func:`acegen.fit.nonlinear.fit_nonlinear` fits every c_p jointly.  Returns
    (coefficients (n_params, P), :class:`FitReport`, (kind, params))."""
    from ..progress import status
    from .assembly_kernel import compile_basis
    from .fs import Embedding, FSResidualModel, check_options, initial_coefficients, predictions, resolve_embedding
    from .nonlinear import NONLINEAR_SOLVERS, fit_nonlinear

    if solver not in NONLINEAR_SOLVERS:
        raise FitError(f"a Finnis-Sinclair fit (embedding {embedding!r}) needs solver 'lm' or 'lbfgs', got {solver!r} "
                       "(the linear fit it starts from is solver_options['init_solver'])")
    kind, params = resolve_embedding(embedding, ndensity, embedding_params)
    opts = check_options(solver_options)
    t0 = time.perf_counter()
    lin = fit_linear(ts, basis_evaluator, solver=opts.get("init_solver", "blr"),
                     solver_options=opts.get("init_options"), gamma=gamma, progress=progress, streaming=streaming,
                     block_size=block_size, workers=workers, client=client, resume=resume, signature=signature,
                     keep_rows=False)
    t1 = time.perf_counter()
    lam = opts.get("lam", lin.result.hyperparameters.get("lam", 0.0))
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.floating)) or not np.isfinite(lam) or lam < 0:
        raise FitError(f"non-linear fit: lam must be a finite number >= 0, got {lam!r}")
    with status("compiling the basis kernel", quiet=None if progress is None else not progress):
        kernel = compile_basis(basis)
    blocks = list(ts.iter_blocks(block_size, 0))
    emb = Embedding(kind, params)
    model = FSResidualModel(blocks, kernel, spec.elements, emb, cache_gib=float(opts.get("cache_gib", 2.0)))
    C0 = initial_coefficients(lin.coefficients, params)
    g = None if gamma is None else np.tile(np.asarray(gamma, dtype=float), emb.ndensity)
    res = fit_nonlinear(model, model.theta_of(C0), solver=solver, gamma=g, lam=float(lam),
                        max_iter=opts.get("max_iter", 100), tol=opts.get("tol", 1e-10),
                        max_jacobian_gib=opts.get("max_jacobian_gib", 4.0), progress=progress)
    t2 = time.perf_counter()
    pred, y, meta = predictions(model, res.theta, block_size)
    C = model.coefficients_of(res.theta)
    info = {**res.info(), "solver": solver, "embedding": kind, "embedding_params": list(params),
            "linear_start": {"solver": opts.get("init_solver", "blr"),
                             "hyperparameters": lin.result.hyperparameters,
                             "info": {k: v for k, v in lin.result.info.items() if k not in ("history", "assembly")}}}
    result = FitResult(res.theta, None, {"lam": float(lam)}, info)
    report = FitReport(C, result, ts, meta, y, pred, error_table(pred - y, meta), gamma, None,
                       {"linear_start": t1 - t0, "nonlinear": t2 - t1, "errors": time.perf_counter() - t2},
                       n_rows=len(meta))
    report.basis_evaluator = model
    report.linear_errors = lin.errors
    return C, report, (kind, params)


def fit_multilayer(spec, structures, *, energy_key="energy", force_key="forces", virial_key=None, stress_key=None,
                   config_type_key="config_type", weights=None, solver="lm", solver_options=None,
                   prior="algebraic", eref=None, missing="error", progress=None, name=None, test=None,
                   verbose=False, weight_keys=None, block_size: int = 64):
    """Fit every layer of a :class:`~acegen.multilayer.spec.MultilayerSpec` jointly
    (:mod:`acegen.fit.multilayer`) and return an :class:`acegen.MultilayerModel`.  ``solver``:
    ``"lm"`` or ``"lbfgs"``; ``solver_options``: ``max_iter`` (default 50), ``tol``, ``lam`` (default: the
    λ of the last layer's linear start), ``init_solver`` / ``init_options`` (the linear starts,
    default BLR), ``max_jacobian_gib``, ``theta_scale`` (default 0.5), ``force_atoms`` (the
    non-linear fit uses the forces of at most that many atoms per structure, drawn with ``seed``
    (default 0): a cheaper Jacobian; the linear starts and the error tables use every atom).  ``prior``
    ``"algebraic"`` (:func:`acegen.fit.multilayer.layer_prior`) or None / ``"none"``.  The other arguments as for
    :func:`acegen.fit.fit`; one layer is a linear fit of its plain basis."""
    import dataclasses

    from ..model import MultilayerModel
    from ..multilayer.basis import lower_multilayer
    from .data import load_training_set
    from .errors_table import error_table
    from .multilayer import MULTILAYER_OPTIONS, MultilayerResidualModel, _predictions, layer_prior
    from .nonlinear import NONLINEAR_SOLVERS, fit_nonlinear
    from .solvers import FitResult, solve

    if solver not in NONLINEAR_SOLVERS:
        raise FitError(f"a multilayer fit needs solver 'lm' or 'lbfgs', got {solver!r} (the linear fits it starts "
                       "from are solver_options['init_solver'])")
    opts = dict(solver_options or {})
    bad = sorted(k for k in opts if k not in MULTILAYER_OPTIONS)
    if bad:
        raise FitError(f"multilayer fit: unknown solver option {bad[0]!r} (allowed: {list(MULTILAYER_OPTIONS)})")
    scale = opts.get("theta_scale", 0.5)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 3:
        raise FitError(f"multilayer fit: theta_scale must be a number in (0, 3], got {scale!r}")
    pk = prior.get("kind", "algebraic") if isinstance(prior, dict) else ("none" if prior is None else prior)
    if isinstance(prior, dict) and set(prior) - {"kind"}:
        raise FitError("multilayer fit: the prior takes no parameters (kind 'algebraic' or 'none')")
    if not isinstance(pk, str):
        raise FitError(f"multilayer fit: prior must be 'algebraic' or 'none', got {prior!r}")
    if eref is None:
        eref = dict(spec.layers[-1].Eref) or None
    keys = {"energy_key": energy_key, "force_key": force_key, "virial_key": virial_key, "stress_key": stress_key,
            "config_type_key": config_type_key, "missing": missing}
    t0 = time.perf_counter()
    ts = load_training_set(structures, **keys, weights=weights, eref=eref, elements=spec.elements, lazy=False,
                           weight_keys=weight_keys)
    e0 = {el: float(ts.eref.get(el, 0.0)) for el in spec.elements}
    if e0 != dict(spec.layers[-1].Eref):
        last = dataclasses.replace(spec.layers[-1], Eref=e0)
        spec = dataclasses.replace(spec, layers=tuple(spec.layers[:-1]) + (last,))
    fa = opts.get("force_atoms")
    if fa is not None and (isinstance(fa, bool) or not isinstance(fa, (int, np.integer)) or fa < 1):
        raise FitError(f"multilayer fit: force_atoms must be a positive integer or None, got {fa!r}")
    seed = opts.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise FitError(f"multilayer fit: seed must be an integer >= 0, got {seed!r}")
    basis = lower_multilayer(spec, progress=progress)
    blocks = list(ts.iter_blocks(block_size, 0))
    model = MultilayerResidualModel(blocks, basis, force_atoms=None if fa is None else int(fa), seed=int(seed))
    full = model.with_all_forces()
    gammas = [layer_prior(lt, pk) for lt in model.layers]
    # linear starts: the plain functions of every layer, alone
    init_solver = opts.get("init_solver", "blr")
    coeffs, lam = [], 0.0
    nl = len(model.layers)
    for n, lt in enumerate(model.layers):
        parts = [full.layer_design(n, b) for b in range(model.n_batches)]
        A = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        w = np.concatenate([p[2] for p in parts])
        Bat = np.concatenate([p[3] for p in parts])
        mask = lt.plain_mask()
        res = solve(A[:, mask], y, w, solver=init_solver, gamma=gammas[n][mask], **dict(opts.get("init_options") or {}))
        c = np.zeros(lt.n_params)
        c[mask] = res.coefficients
        if n < nl - 1:
            amax = float(np.max(np.abs(Bat @ c))) if len(Bat) else 0.0
            c *= scale / amax if amax > 0 else 1.0
        else:
            lam = float(res.hyperparameters.get("lam", 0.0))
        coeffs.append(c)
    lam = opts.get("lam", lam)
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.floating)) or not np.isfinite(lam) or lam < 0:
        raise FitError(f"multilayer fit: lam must be a finite number >= 0, got {lam!r}")
    theta0 = np.concatenate(coeffs)
    t1 = time.perf_counter()
    pred0, y0, meta0 = _predictions(full, theta0, block_size)
    lin_errors = error_table(pred0 - y0, meta0)
    if nl > 1:
        res = fit_nonlinear(model, theta0, solver=solver, gamma=np.concatenate(gammas), lam=float(lam),
                            max_iter=opts.get("max_iter", 50), tol=opts.get("tol", 1e-10),
                            max_jacobian_gib=opts.get("max_jacobian_gib", 4.0), progress=progress)
        theta, info = res.theta, res.info()
    else:
        theta, info = theta0, {"loss": None, "message": "one layer: the linear fit"}
    t2 = time.perf_counter()
    pred, y, meta = _predictions(full, theta, block_size)
    errors = {"train": error_table(pred - y, meta), "train (linear start)": lin_errors}
    info = {**info, "solver": solver, "lam": float(lam), "theta_scale": float(scale),
            "linear_start": {"solver": init_solver}}
    result = FitResult(theta, None, {"lam": float(lam)}, info)
    report = FitReport(model.split(theta), result, ts, meta, y, pred, errors["train"], np.concatenate(gammas), None,
                       {"linear_start": t1 - t0, "nonlinear": t2 - t1, "errors": time.perf_counter() - t2},
                       n_rows=len(meta))
    report.linear_errors = lin_errors
    report.basis_evaluator = full
    test_set = None
    if test is not None:
        test_set = load_training_set(test, **keys, weights=weights, eref=ts.eref or "zero", elements=spec.elements,
                                     weight_keys=weight_keys, lazy=False)
        tm = MultilayerResidualModel(list(test_set.iter_blocks(block_size, 0)), basis, cache=False)
        tp, ty, tmeta = _predictions(tm, theta, block_size)
        report.test_errors, report.test_meta, report.test_predictions, report.test_y = \
            error_table(tp - ty, tmeta), tmeta, tp, ty
        errors["test"] = report.test_errors
    from .provenance import build_provenance, format_fit_log

    provenance = build_provenance(
        spec=spec, train=structures, test=test, training_set=ts, test_set=test_set, keys=keys, weights=weights,
        solver=solver, solver_options=solver_options, prior=prior, committee=None, result=result, errors=errors,
        timings=report.timings, n_rows=report.n_rows)
    out = MultilayerModel(spec, model.split(theta), name=name)
    out.fit_report = report
    out.provenance = provenance
    if verbose:
        print(format_fit_log(provenance))
    return out


def _model_name(cfg) -> str | None:
    """A fitted model is named after its output model file (``fit_cu/Cu.json`` -> ``Cu``), so
    the fits of different configs get different names; None (the default) without one."""
    from ..model import _safe_name

    out = cfg.model_path or cfg.yace_path
    return None if out is None else _safe_name(out.stem)


def fit_from_config(path: str | Path, *, basis=None, basis_evaluator: BasisEvaluator | None = None,
                    verbose: bool = True, data_dir: str | Path | None = None):
    """Run the fit described by a YAML config (:mod:`acegen.fit.config`; ``data_dir``: the
    data folder, see :func:`acegen.fit.config.load_config`) through :func:`fit`: print the fit
    log (data, settings, solver state, train and test error tables), save the error tables,
    the model (.json / .yace, with its provenance and committee) and the log next to the
    model (``<model>.log``), and, if asked, parity plots and dimer curves.  Returns the fitted
    :class:`acegen.Model`."""
    from ..errors import SpecError
    from ..spec import BasisSpec
    from .config import load_config
    from .provenance import format_fit_log

    cfg = load_config(path, data_dir=data_dir)
    field_name = "basis" if cfg.multilayer is None else "multilayer"
    try:
        if cfg.multilayer is None:
            spec = BasisSpec(**cfg.basis)
        else:
            from ..multilayer.spec import MultilayerSpec

            d = dict(cfg.multilayer)
            d["layers"] = [BasisSpec(**ld).to_dict() for ld in d["layers"]]
            spec = MultilayerSpec.from_dict(d)
    except SpecError as e:
        raise ConfigError(cfg.path, field_name, str(e)) from None
    except TypeError as e:
        raise ConfigError(cfg.path, field_name, f"invalid field: {e}") from None
    t0 = time.perf_counter()
    if basis is None and cfg.multilayer is None:
        from ..basis import lower

        basis = lower(spec)
    t_lower = time.perf_counter() - t0
    client = None
    if cfg.scheduler is not None:
        try:
            from distributed import Client
        except ImportError:
            raise ConfigError(cfg.path, "assembly.scheduler",
                              "needs dask.distributed (pip install 'acegen[distributed]')") from None
        client = Client(cfg.scheduler)
    try:
        model = fit(spec, cfg.train, energy_key=cfg.energy_key, force_key=cfg.force_key,
                    virial_key=cfg.virial_key, stress_key=cfg.stress_key, config_type_key=cfg.config_type_key,
                    weights=cfg.weights, solver=cfg.solver, solver_options=cfg.solver_options, prior=cfg.prior,
                    eref=cfg.eref, missing=cfg.missing, committee=cfg.committee, basis=basis,
                    basis_evaluator=basis_evaluator, progress=cfg.progress, name=_model_name(cfg),
                    test=cfg.test or None, weight_keys=cfg.weight_keys, streaming=cfg.streaming,
                    block_size=cfg.block_size, workers=cfg.workers, client=client, resume=cfg.resume,
                    embedding=cfg.embedding, ndensity=cfg.ndensity, embedding_params=cfg.embedding_params)
    finally:
        if client is not None:
            client.close()
    report: FitReport = model.fit_report
    model.provenance["timings"] = {"lower": t_lower, **model.provenance["timings"]}
    model.provenance["config"] = None if cfg.path is None else str(cfg.path)
    evaluator = report.basis_evaluator
    tables = {"train": report.errors}
    if report.test_errors is not None:
        tables["test"] = report.test_errors
    log = format_fit_log(model.provenance)
    if verbose:
        print(log)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    for p in cfg.error_paths:
        save_error_table(tables, p)
    if cfg.model_path is not None:
        model.save(cfg.model_path)
    log_path = (cfg.model_path or cfg.yace_path or cfg.output_dir / "fit").with_suffix(".log")
    log_path.write_text(log + "\n")
    if cfg.yace_path is not None:
        try:
            model.save(cfg.yace_path)
        except ImportError as e:
            raise FitError(f"{cfg.yace_path}: cannot write .yace yet ({e})") from None
    if cfg.plots:
        from .plots import dimer_curves, parity_plot

        if report.predictions is not None:
            parity_plot(report.predictions, report.y, report.meta, cfg.output_dir / "parity_train.png", title="train")
        if report.test_errors is not None and report.test_predictions is not None:
            parity_plot(report.test_predictions, report.test_y, report.test_meta, cfg.output_dir / "parity_test.png",
                        title="test")
        e0 = report.training_set.e0_of
        c = report.coefficients
        if cfg.multilayer is not None:  # evaluator: the multilayer residual model
            theta = report.result.coefficients
            dimer_curves(lambda atoms: evaluator.compute(atoms, theta, forces=False)["energy"] + e0(atoms),
                         spec.elements, cfg.output_dir / "dimers.png")
        elif cfg.embedding is not None:  # evaluator: the Finnis–Sinclair residual model
            theta = report.result.coefficients
            dimer_curves(lambda atoms: evaluator.energy(atoms, theta) + e0(atoms), spec.elements,
                         cfg.output_dir / "dimers.png")
        else:
            dimer_curves(lambda atoms: float(np.asarray(evaluator(atoms)["energy"]) @ c) + e0(atoms), spec.elements,
                         cfg.output_dir / "dimers.png")
    return model
