"""Streaming assembly: the design matrix in blocks of structures, folded into one triangular
factor, serially, in worker processes or on a Dask cluster, with resumable checkpoints.

A block of structures gives the weighted rows [W A | W y] (rows of zero weight dropped) and
their triangular factor R_b (``qr(..., mode="r")``, at most M+1 rows for M parameters).  Folding
is R ← qr([R; R_b]): for any c, ‖W(y − A c)‖² over all rows seen equals the same quantity for
the stacked factors, so the final R (with the row count N and Σ log w) is everything the
solvers need (:func:`acegen.fit.solvers.solve_compressed`).  Memory: O(M² + one block).

Blocks are evaluated by whatever executes them (this process, a pool of ``workers`` forked
processes, or a ``dask.distributed`` client), each returning its R_b; the driver folds them
in block order, so the result does not depend on scheduling (the same for any number of
workers, up to the round-off of the block QR under different BLAS thread counts) and the folded
prefix of blocks is a checkpoint: with ``resume``, the fold state (R, N, Σ log w, blocks
folded) is written atomically to ``<dir>/<key>.npz`` on interruption and every
``checkpoint_interval`` seconds; the key hashes the training data (structures, targets, row
weights), the basis signature and the block size, and a SHA-256 of the stored arrays is
checked on load.

Predictions (for error tables) are a second streamed pass: each block is evaluated again and
only A·c, y and the row meta come back (O(rows), not O(rows × M)).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import cache_root, write_atomic
from ..errors import FitError
from .data import RowMeta, TrainingSet, _n_rows, assemble

__all__ = ["Compressed", "LazyBasisEvaluator", "block_factor", "compress_stream", "data_hash",
           "default_checkpoint_dir", "error_stream", "fold", "predict_stream"]

_FORMAT = "acegen-fit-stream-2"


# ---------------------------------------------------------------------------- folding
@dataclass
class Compressed:
    """The compressed weighted system: ``R_aug`` (k, M+1) triangular factor of [W A | W y],
    ``n_obs`` rows of positive weight, ``log_w`` = Σ log w over them."""

    R_aug: np.ndarray
    n_obs: int
    log_w: float

    @property
    def n_params(self) -> int:
        return self.R_aug.shape[1] - 1


def fold(a: Compressed | None, b: Compressed) -> Compressed:
    """R = qr([R_a; R_b]) (one reduction step); ``a`` None starts the fold."""
    if a is None:
        return b
    if a.R_aug.shape[1] != b.R_aug.shape[1]:
        raise FitError(f"blocks disagree on the number of parameters: {a.n_params} and {b.n_params}")
    R = np.linalg.qr(np.vstack([a.R_aug, b.R_aug]), mode="r")
    return Compressed(R, a.n_obs + b.n_obs, a.log_w + b.log_w)


def _block_set(structs, ts: TrainingSet) -> TrainingSet:
    return TrainingSet(list(structs), ts.eref, ts.weights, ts.keys)


def block_factor(evaluator, structs: list, ts_proto: TrainingSet) -> Compressed | None:
    """Triangular factor of the weighted rows of one block (None: no row of positive weight)."""
    if not any(_n_rows(s) for s in structs):
        return None
    A, y, w, _ = assemble(evaluator, _block_set(structs, ts_proto), progress=False)
    keep = w > 0
    if not keep.any():
        return None
    wk = w[keep]
    aug = np.empty((int(keep.sum()), A.shape[1] + 1))
    aug[:, :-1] = A[keep] * wk[:, None]
    aug[:, -1] = y[keep] * wk
    del A
    return Compressed(np.linalg.qr(aug, mode="r"), int(keep.sum()), float(np.sum(np.log(wk))))


def block_predict(evaluator, structs: list, ts_proto: TrainingSet, coefficients: np.ndarray):
    """(A·c, y, row meta) of one block."""
    if not any(_n_rows(s) for s in structs):
        e = np.empty(0)
        i = np.empty(0, dtype=np.int64)
        return e, e, RowMeta(i, np.empty(0, dtype="<U1"), i, i, np.empty(0, dtype=object))
    A, y, _, meta = assemble(evaluator, _block_set(structs, ts_proto), progress=False)
    return A @ coefficients, y, meta


# ---------------------------------------------------------------------------- evaluators
class LazyBasisEvaluator:
    """A picklable basis evaluator: holds the lowered basis and builds
    :func:`acegen.fit.driver.make_basis_evaluator` on first use in each process (the compiled
    kernel comes from the kernel cache), so it can be shipped to worker processes and Dask
    workers."""

    def __init__(self, basis, *, forces: bool = True, virial: bool = True, target: str = "auto",
                 nthreads: int = 0):
        self.basis = basis
        self.options = {"forces": forces, "virial": virial, "target": target, "nthreads": nthreads}
        self._ev = None

    @property
    def signature(self) -> str:
        return self.basis.signature() + repr(sorted(self.options.items()))

    def __getstate__(self):
        return {"basis": self.basis, "options": self.options, "_ev": None}

    def __call__(self, atoms):
        if self._ev is None:
            from .evaluator import make_basis_evaluator

            self._ev = make_basis_evaluator(self.basis, **self.options)
        return self._ev(atoms)


# ---------------------------------------------------------------------------- executors
_WORKER: dict[str, Any] = {}


def _one_thread_env() -> None:
    """OpenMP / BLAS libraries loaded from now on start with one thread (those already loaded
    are limited by threadpoolctl)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def _init_worker(evaluator, ts_proto) -> None:
    from threadpoolctl import threadpool_limits

    _one_thread_env()
    _WORKER["limits"] = threadpool_limits(1)  # one BLAS / OpenMP thread per worker process
    _WORKER["evaluator"] = evaluator
    _WORKER["ts"] = ts_proto


def _worker_task(kind: str, structs, coefficients=None):
    ev, ts = _WORKER["evaluator"], _WORKER["ts"]
    if kind == "factor":
        return block_factor(ev, structs, ts)
    return block_predict(ev, structs, ts, coefficients)


def _dask_task(kind: str, evaluator, ts_proto, structs, coefficients=None):
    from threadpoolctl import threadpool_limits

    _one_thread_env()  # a Dask worker process runs only such tasks
    with threadpool_limits(1):
        if kind == "factor":
            return block_factor(evaluator, structs, ts_proto)
        return block_predict(evaluator, structs, ts_proto, coefficients)


class _Done:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _ordered(submit: Callable[[Any], Any], items: Iterable, window: int) -> Iterator:
    """Results of ``submit(item).result()`` in item order, at most ``window`` in flight."""
    pending: deque = deque()
    for item in items:
        pending.append(submit(item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class _Runner:
    """Runs block tasks serially, in a pool of forked processes, or on a Dask client."""

    def __init__(self, evaluator, ts_proto: TrainingSet, workers: int = 1, client=None):
        if not (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1):
            raise FitError(f"workers must be an integer >= 1, got {workers!r}")
        # the blocks carry their structures: the workers need only Eref, weights and keys
        proto = TrainingSet([], ts_proto.eref, ts_proto.weights, ts_proto.keys)
        self.evaluator, self.ts, self.workers, self.client = evaluator, proto, workers, client
        self.pool = None
        self._scattered = None

    def __enter__(self):
        if self.client is not None:
            if not hasattr(self.client, "submit") or not hasattr(self.client, "scatter"):
                raise FitError(f"client must be a dask.distributed.Client, got {type(self.client).__name__}")
            self._scattered = self.client.scatter([self.evaluator, self.ts], broadcast=True, hash=False)
        elif self.workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            # fork: the evaluator (e.g. a loaded kernel) is inherited, not pickled
            ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
            self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                            initargs=(self.evaluator, self.ts))
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    @property
    def window(self) -> int:
        if self.client is not None:
            n = max(1, len(self.client.scheduler_info().get("workers", {})))
            return 2 * n
        return 2 * self.workers if self.pool is not None else 1

    def map(self, kind: str, blocks: Iterable, coefficients=None) -> Iterator:
        if self.client is not None:
            ev, ts = self._scattered

            def submit(b):
                return self.client.submit(_dask_task, kind, ev, ts, b, coefficients, pure=False)
        elif self.pool is not None:
            def submit(b):
                return self.pool.submit(_worker_task, kind, b, coefficients)
        else:
            def submit(b):
                if kind == "factor":
                    return _Done(block_factor(self.evaluator, b, self.ts))
                return _Done(block_predict(self.evaluator, b, self.ts, coefficients))
        return _ordered(submit, blocks, self.window)


def _blocks(ts, block_size: int, start: int = 0) -> Iterator[list]:
    """Blocks of structures in order (an in-memory set slices its list, a
    :class:`~acegen.fit.data.LazyTrainingSet` reads its files once, sequentially)."""
    return iter(ts.iter_blocks(block_size, start))


def _n_blocks(ts, block_size: int) -> int:
    return ts.n_blocks(block_size)


def _check_block_size(block_size) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise FitError(f"block_size must be an integer >= 1 (structures per block), got {block_size!r}")
    return block_size


# ---------------------------------------------------------------------------- checkpoints
def default_checkpoint_dir() -> Path:
    """``<acegen cache>/fit`` (the one cache root, :func:`acegen._fs.cache_root`)."""
    return cache_root() / "fit"


def data_hash(ts) -> str:
    """SHA-256 over every structure (species, positions, cell, pbc), its targets, row weights
    and config type, in order, and the reference energies (a lazy training set hashes its
    files while scanning them: no second read)."""
    return ts.data_hash()


def _arrays_digest(R: np.ndarray, n_obs: int, log_w: float, done: int) -> str:
    h = hashlib.sha256(np.ascontiguousarray(R).tobytes())
    h.update(repr((R.shape, int(n_obs), float(log_w).hex(), int(done))).encode())
    return h.hexdigest()


class Checkpoint:
    """The fold state of one (data, basis, block size) in ``<directory>/<key>.npz``."""

    def __init__(self, directory: str | Path, key: str):
        self.key = key
        self.path = Path(directory) / f"{key}.npz"

    def load(self) -> tuple[Compressed | None, int]:
        if not self.path.is_file():
            return None, 0
        try:
            with np.load(self.path, allow_pickle=False) as f:
                key, digest = str(f["key"]), str(f["digest"])
                R, n_obs, log_w, done = f["R"], int(f["n_obs"]), float(f["log_w"]), int(f["done"])
        except Exception as e:  # a truncated or foreign file: start again
            warnings.warn(f"{self.path}: unreadable fit checkpoint ({e}); assembling from the start", stacklevel=3)
            return None, 0
        if key != self.key or digest != _arrays_digest(R, n_obs, log_w, done) or done < 0:
            warnings.warn(f"{self.path}: fit checkpoint fails verification; assembling from the start", stacklevel=3)
            return None, 0
        return (Compressed(R, n_obs, log_w) if done > 0 and R.size else None), done

    def save(self, comp: Compressed | None, done: int) -> None:
        R = np.zeros((0, 0)) if comp is None else comp.R_aug
        n_obs, log_w = (0, 0.0) if comp is None else (comp.n_obs, comp.log_w)

        def write(fh) -> None:
            np.savez(fh, key=self.key, R=R, n_obs=n_obs, log_w=log_w, done=done,
                     digest=_arrays_digest(R, n_obs, log_w, done))
            fh.flush()
            os.fsync(fh.fileno())

        if not write_atomic(self.path, write, binary=True, suffix=".npz"):
            warnings.warn(f"cannot write the fit checkpoint {self.path}: an interrupted fit will start over",
                          RuntimeWarning, stacklevel=2)


def checkpoint_key(ts: TrainingSet, basis_signature: str, block_size: int) -> str:
    h = hashlib.sha256(f"{_FORMAT}|{data_hash(ts)}|{basis_signature}|{block_size}".encode())
    return h.hexdigest()[:40]


# ---------------------------------------------------------------------------- drivers
def _bar(total: int, initial: int, desc: str, progress: bool | None):
    """A bar over blocks on stderr: shown when :func:`acegen.progress.enabled` (a terminal,
    not ``ACEGEN_QUIET``), or always/never for ``progress`` True/False."""
    from tqdm import tqdm

    from ..progress import enabled

    show = enabled(sys.stderr, None if progress is None else not progress)
    return tqdm(total=total, initial=initial, desc=desc, unit="block", file=sys.stderr, disable=not show)


def compress_stream(evaluator, ts: TrainingSet, *, block_size: int = 64, workers: int = 1, client=None,
                    checkpoint: Checkpoint | None = None, checkpoint_interval: float = 60.0,
                    progress: bool | None = None,
                    callback: Callable[[int, int], None] | None = None) -> tuple[Compressed, dict[str, Any]]:
    """Fold every block of ``ts`` into one :class:`Compressed` system.

    ``callback(block, n_blocks)`` runs after each fold (an exception from it interrupts the
    assembly, like any other; with a ``checkpoint`` the folded prefix is saved first).
    Returns the system and info ``{"n_blocks", "resumed_from", "folded"}``."""
    block_size = _check_block_size(block_size)
    n_blocks = _n_blocks(ts, block_size)
    comp, done = checkpoint.load() if checkpoint is not None else (None, 0)
    if done > n_blocks:
        comp, done = None, 0
    start = done
    last_save = time.monotonic()
    folded = []
    bar = _bar(n_blocks, done, "assembling", progress)
    try:
        if done < n_blocks:
            with _Runner(evaluator, ts, workers, client) as runner:
                for b, part in enumerate(runner.map("factor", _blocks(ts, block_size, done)), start=done):
                    if part is not None:
                        comp = fold(comp, part)
                    done = b + 1
                    folded.append(b)
                    bar.update(1)
                    if checkpoint is not None and time.monotonic() - last_save > checkpoint_interval:
                        checkpoint.save(comp, done)
                        last_save = time.monotonic()
                    if callback is not None:
                        callback(b, n_blocks)
    except BaseException:
        if checkpoint is not None and done > start:
            checkpoint.save(comp, done)
        raise
    finally:
        bar.close()
    if checkpoint is not None and done > start:
        checkpoint.save(comp, done)
    if comp is None:
        raise FitError("the training set has no observations of positive weight")
    return comp, {"n_blocks": n_blocks, "resumed_from": start, "folded": folded}


def predict_stream(evaluator, ts: TrainingSet, coefficients: np.ndarray, *, block_size: int = 64,
                   workers: int = 1, client=None,
                   progress: bool | None = None) -> tuple[np.ndarray, np.ndarray, RowMeta]:
    """Predictions A·c, targets y and row meta of every row of ``ts``, block by block."""
    block_size = _check_block_size(block_size)
    preds, ys, metas = [], [], []
    bar = _bar(_n_blocks(ts, block_size), 0, "predicting", progress)
    try:
        with _Runner(evaluator, ts, workers, client) as runner:
            for b, (p, y, meta) in enumerate(runner.map("predict", _blocks(ts, block_size), coefficients)):
                preds.append(p)
                ys.append(y)
                metas.append(RowMeta(meta.structure + b * block_size, meta.kind, meta.component, meta.natoms,
                                     meta.config_type))
                bar.update(1)
    finally:
        bar.close()
    meta = RowMeta(*(np.concatenate([getattr(m, f) for m in metas])
                     for f in ("structure", "kind", "component", "natoms", "config_type")))
    return np.concatenate(preds), np.concatenate(ys), meta


def error_stream(evaluator, ts, coefficients: np.ndarray, *, block_size: int = 64, workers: int = 1,
                 client=None, progress: bool | None = None) -> tuple[dict[str, Any], int]:
    """The error table of ``coefficients`` on ``ts`` and its number of rows, block by block,
    without keeping the rows (:class:`acegen.fit.errors_table.ErrorAccumulator`): memory
    O(one block)."""
    from .errors_table import ErrorAccumulator

    block_size = _check_block_size(block_size)
    acc = ErrorAccumulator()
    bar = _bar(_n_blocks(ts, block_size), 0, "predicting", progress)
    try:
        with _Runner(evaluator, ts, workers, client) as runner:
            for b, (p, y, meta) in enumerate(runner.map("predict", _blocks(ts, block_size), coefficients)):
                acc.add(p - y, RowMeta(meta.structure + b * block_size, meta.kind, meta.component, meta.natoms,
                                       meta.config_type))
                bar.update(1)
    finally:
        bar.close()
    if acc.n_rows == 0:
        raise FitError("the data set has no observations (every target was skipped)")
    return acc.table(), acc.n_rows
