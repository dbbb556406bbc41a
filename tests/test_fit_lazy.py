"""Lazy training sets (acegen.fit.data.LazyTrainingSet): structure files scanned once for
metadata and read again, sequentially, on every pass; the same structures, data hash and
coefficients as the in-memory training set, with worker processes and with resume."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms

import acegen.fit.data as fit_data
from acegen.fit import FitError, LazyTrainingSet, TrainingSet, load_training_set
from acegen.fit.driver import fit_linear
from acegen.fit.stream import checkpoint_key

from .fit_toy import PairToy, label, random_structures

K = 7
THETA = np.linspace(-1.0, 1.1, K) * np.array([1, -1] * 3 + [1])
E0 = {"Si": -3.5, "C": -1.25}
KW = {"virial_key": "virial", "weights": {"rattled": {"E": 5.0, "F": 0.5}, "surface": {"V": 0.0}},
      "weight_keys": {"E": "w_energy"}}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    model = PairToy(K)
    data = label(random_structures(17, seed=5, elements=("Si", "C"), sizes=(2, 6)), model, THETA, e0=E0,
                 noise=2e-3, config_types=["bulk", "rattled", "surface"])
    data[4].info["w_energy"] = 2.5
    isolated = []
    for el in ("Si", "C"):
        iso = Atoms(el, cell=np.eye(3) * 20.0, pbc=False)
        iso.info.update(energy=E0[el], config_type="isolated_atom")
        isolated.append(iso)
    frames = data[:6] + isolated[:1] + data[6:] + isolated[1:]
    path = tmp_path_factory.mktemp("lazy") / "train.xyz"
    ase.io.write(path, frames, format="extxyz")
    return model, path


class _Reads:
    """Counts the file reads (:func:`acegen.fit.data.iter_structures` calls) and the frames read."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self.frames = 0
        orig = fit_data.iter_structures

        def counted(path, index=":"):
            self.calls += 1
            for atoms in orig(path, index):
                self.frames += 1
                yield atoms

        monkeypatch.setattr(fit_data, "iter_structures", counted)


def test_lazy_set_matches_the_in_memory_set(toy):
    _, path = toy
    for eref in (None, "average", {"Si": -3.0}):
        lazy = load_training_set(path, eref=eref, **KW)
        eager = load_training_set(path, eref=eref, lazy=False, **KW)
        assert isinstance(lazy, LazyTrainingSet) and isinstance(eager, TrainingSet)
        assert len(lazy) == len(eager) == 17
        assert lazy.isolated == eager.isolated == [6, 18]
        assert lazy.eref == eager.eref
        assert lazy.config_types == eager.config_types == ["bulk", "rattled", "surface"]
        assert (lazy.has_forces, lazy.has_virials) == (eager.has_forces, eager.has_virials) == (True, True)
        assert lazy.n_atoms_total == eager.n_atoms_total == sum(s.n_atoms for s in eager.structures)
        assert lazy.data_hash() == eager.data_hash()
        got = [s for block in lazy.iter_blocks(5) for s in block]
        assert [len(b) for b in lazy.iter_blocks(5)] == [5, 5, 5, 2]
        for a, b in zip(got, eager.structures, strict=True):
            assert (a.index, a.config_type, a.energy, a.e0) == (b.index, b.config_type, b.energy, b.e0)
            np.testing.assert_array_equal(a.atoms.positions, b.atoms.positions)
            np.testing.assert_array_equal(a.forces, b.forces)
            np.testing.assert_array_equal(a.virial, b.virial)
            assert {q: np.asarray(v).tolist() for q, v in a.weights.items()} == \
                   {q: np.asarray(v).tolist() for q, v in b.weights.items()}
    # another reference energy is another data hash
    assert load_training_set(path, eref={"Si": -3.0}, **KW).data_hash() != \
           load_training_set(path, eref={"Si": -3.1}, **KW).data_hash()


def test_lazy_fit_equals_in_memory_fit_with_workers(toy, monkeypatch):
    model, path = toy
    eager = load_training_set(path, lazy=False, **KW)
    ref = fit_linear(eager, model, solver="blr", streaming=False, progress=False)
    reads = _Reads(monkeypatch)
    lazy = load_training_set(path, **KW)
    assert (reads.calls, reads.frames) == (1, 19)  # the scan: one read
    for bs, workers in ((1, 1), (4, 1), (4, 2)):
        reads.calls = reads.frames = 0
        rep = fit_linear(lazy, model, solver="blr", block_size=bs, workers=workers, progress=False)
        # one sequential read for the assembly, one for the error table
        assert (reads.calls, reads.frames) == (2, 2 * 19)
        np.testing.assert_allclose(rep.coefficients, ref.coefficients, rtol=1e-10, atol=0)
        np.testing.assert_allclose(rep.predictions, ref.predictions, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(rep.y, ref.y)
        np.testing.assert_array_equal(rep.meta.structure, ref.meta.structure)
        assert rep.errors["set"]["F"]["rmse"] == pytest.approx(ref.errors["set"]["F"]["rmse"], rel=1e-10)
    # the in-memory set streamed in the same blocks gives the same fold bit for bit
    same = fit_linear(eager, model, solver="blr", block_size=4, workers=2, progress=False)
    np.testing.assert_array_equal(rep.coefficients, same.coefficients)


class _Stop(Exception):
    pass


def test_lazy_fit_resumes_from_a_checkpoint(toy, tmp_path, monkeypatch):
    model, path = toy
    lazy = load_training_set(path, **KW)
    eager = load_training_set(path, lazy=False, **KW)
    assert checkpoint_key(lazy, "toy", 3) == checkpoint_key(eager, "toy", 3)
    full = fit_linear(eager, model, solver="blr", block_size=3, progress=False)
    seen = []

    def stop(b, n):
        seen.append(b)
        if b == 2:
            raise _Stop

    with pytest.raises(_Stop):
        fit_linear(lazy, model, solver="blr", block_size=3, resume=tmp_path, signature="toy", callback=stop,
                   progress=False)
    assert seen == [0, 1, 2]
    seen.clear()
    reads = _Reads(monkeypatch)
    rep = fit_linear(lazy, model, solver="blr", block_size=3, resume=tmp_path, signature="toy",
                     callback=lambda b, n: seen.append(b), progress=False)
    assert seen == [3, 4, 5]
    assert rep.result.info["assembly"]["resumed_from"] == 3
    assert reads.calls == 2  # the rest of the assembly and the error table: one read each
    np.testing.assert_array_equal(rep.coefficients, full.coefficients)


def test_file_changed_between_passes_is_an_error(toy, tmp_path):
    model, path = toy
    frames = ase.io.read(path, ":")
    copy = tmp_path / "copy.xyz"
    ase.io.write(copy, frames, format="extxyz")
    lazy = load_training_set(copy, **KW)
    ase.io.write(copy, frames[:-3], format="extxyz")
    with pytest.raises(FitError, match="changed during the fit"):
        fit_linear(lazy, model, block_size=4, progress=False)
    frames[2] = frames[2][:-1]
    ase.io.write(copy, frames, format="extxyz")
    with pytest.raises(FitError, match="structure 2 differs"):
        fit_linear(lazy, model, block_size=4, progress=False)


def test_lazy_needs_files_and_pacemaker_frames_stay_in_memory(toy, tmp_path):
    model, path = toy
    frames = ase.io.read(path, ":")
    with pytest.raises(FitError, match="lazy=True needs structure files"):
        load_training_set(frames, lazy=True, **KW)
    assert isinstance(load_training_set(frames, **KW), TrainingSet)
    assert isinstance(load_training_set([path, path], **KW), LazyTrainingSet)
    assert len(load_training_set([path, path], **KW)) == 34
    pd = pytest.importorskip("pandas")
    rows = [{"ase_atoms": a, "energy": a.get_potential_energy()} for a in frames if len(a) > 1]
    pd.DataFrame(rows).to_pickle(tmp_path / "d.pckl.gzip", compression="gzip")
    ts = load_training_set(tmp_path / "d.pckl.gzip", force_key=None, eref="zero")
    assert isinstance(ts, TrainingSet) and len(ts) == 17


def test_acegen_fit_from_files_reads_them_lazily(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import acegen
    import acegen.model

    from .test_fit_driver import THETA as T5, StubModel, _data

    monkeypatch.setattr(acegen.model, "Model", StubModel)
    model = PairToy(len(T5))
    basis = SimpleNamespace(spec=acegen.BasisSpec(["Si"], 2, 6), functions=[],
                            pair=[SimpleNamespace(z0=0, zj=0, n=k + 1) for k in range(len(T5))], n_params=len(T5))
    ase.io.write(tmp_path / "train.xyz", _data(model, n=12, noise=1e-3), format="extxyz")
    ase.io.write(tmp_path / "test.xyz", _data(model, n=5, seed=7)[1:], format="extxyz")
    spec = acegen.BasisSpec(["Si"], 2, 6)
    kw = dict(virial_key="virial", basis=basis, basis_evaluator=model, progress=False, test=tmp_path / "test.xyz")
    lazy = acegen.fit(spec, tmp_path / "train.xyz", block_size=5, **kw)
    eager = acegen.fit(spec, tmp_path / "train.xyz", streaming=False, **kw)
    assert isinstance(lazy.fit_report.training_set, LazyTrainingSet)
    assert isinstance(eager.fit_report.training_set, TrainingSet)
    np.testing.assert_allclose(lazy.coefficients, eager.coefficients, rtol=1e-10, atol=0)
    np.testing.assert_allclose(lazy.fit_report.test_predictions, eager.fit_report.test_predictions, rtol=1e-10)
    assert lazy.provenance["data"]["train_counts"] == eager.provenance["data"]["train_counts"]
    assert lazy.provenance["data"]["test_counts"] == eager.provenance["data"]["test_counts"]
    assert lazy.provenance["data"]["train_counts"]["n_isolated_atoms"] == 1
    assert lazy.provenance["data"]["train"] == eager.provenance["data"]["train"]
    # nothing per row kept: the same error tables and row count
    bare = acegen.fit(spec, tmp_path / "train.xyz", block_size=5, keep_rows=False, **kw)
    assert bare.fit_report.predictions is None and bare.fit_report.test_predictions is None
    assert bare.provenance["settings"]["n_rows"] == eager.provenance["settings"]["n_rows"]
    for which in ("train", "test"):
        _same_table(bare.provenance["errors"][which], eager.provenance["errors"][which])


def _same_table(a, b):
    assert a["config_types"].keys() == b["config_types"].keys()
    for ga, gb in [*zip(a["config_types"].values(), b["config_types"].values()), (a["set"], b["set"])]:
        assert ga["n_structures"] == gb["n_structures"]
        for q in ("E", "F", "V"):
            assert (ga[q] is None) == (gb[q] is None)
            if ga[q] is not None:
                assert ga[q]["n"] == gb[q]["n"]
                assert ga[q]["rmse"] == pytest.approx(gb[q]["rmse"], rel=1e-12)
                assert ga[q]["mae"] == pytest.approx(gb[q]["mae"], rel=1e-12)


def test_error_accumulator_equals_the_error_table():
    from acegen.fit.data import RowMeta
    from acegen.fit.errors_table import ErrorAccumulator, error_table

    rng = np.random.default_rng(0)
    n_struct = 9
    rows = []
    for s in range(n_struct):
        nat = int(rng.integers(1, 5))
        kinds = ["E"] + ["F"] * 3 * nat + (["V"] * 6 if s % 3 else [])
        rows += [(s, k, nat, ["a", "b", "c"][s % 3] if s != 4 else "a") for k in kinds]
    st, kind, nat, ct = (np.array(x) for x in zip(*rows))
    meta = RowMeta(st, kind, np.zeros(len(st), dtype=np.int64), nat, ct.astype(object))
    r = rng.normal(size=len(st))
    acc = ErrorAccumulator()
    for lo, hi in ((0, 3), (3, 4), (4, n_struct)):  # blocks of whole structures
        m = (st >= lo) & (st < hi)
        acc.add(r[m], RowMeta(st[m], kind[m], meta.component[m], nat[m], meta.config_type[m]))
    _same_table(acc.table(), error_table(r, meta))
    assert acc.n_rows == len(st)


def test_keep_rows_false_keeps_nothing_per_row(toy):
    model, path = toy
    lazy = load_training_set(path, **KW)
    rows = fit_linear(lazy, model, solver="blr", block_size=4, progress=False)
    bare = fit_linear(lazy, model, solver="blr", block_size=4, workers=2, keep_rows=False, progress=False)
    assert bare.predictions is None and bare.y is None and bare.meta is None
    assert bare.n_rows == rows.n_rows == len(rows.meta)
    np.testing.assert_allclose(bare.coefficients, rows.coefficients, rtol=1e-12, atol=0)
    _same_table(bare.errors, rows.errors)


def test_large_sets_keep_no_rows_by_default(toy, monkeypatch):
    """By default a streamed fit keeps per-row arrays only for small sets: above the limit the
    report holds the error table alone (memory independent of the data size)."""
    from acegen.fit import driver

    model, path = toy
    lazy = load_training_set(path, **KW)
    small = fit_linear(lazy, model, solver="blr", block_size=4, progress=False)
    assert small.predictions is not None and small.meta is not None
    monkeypatch.setattr(driver, "KEEP_ROWS_LIMIT", 10)
    large = fit_linear(lazy, model, solver="blr", block_size=4, progress=False)
    assert large.predictions is None and large.y is None and large.meta is None
    assert large.n_rows == small.n_rows
    np.testing.assert_allclose(large.coefficients, small.coefficients, rtol=1e-12, atol=0)
    _same_table(large.errors, small.errors)
