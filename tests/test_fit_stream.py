"""Streaming assembly (acegen.fit.stream): blocks folded into the triangular factor give the
in-memory fit to round-off, for any number of worker processes or on Dask; resumable
checkpoints; pacemaker data frames and per-structure data weights; the YAML options."""

from __future__ import annotations

import sys

import ase.io
import numpy as np
import pytest

from acegen.fit import ConfigError, FitError, TargetError, load_training_set, read_structures
from acegen.fit.config import parse_config
from acegen.fit.driver import fit_linear
from acegen.fit.stream import Checkpoint, checkpoint_key, compress_stream

from .fit_toy import PairToy, label, random_structures

K = 9
THETA = np.linspace(-1.0, 1.2, K) * np.array([1, -1] * 4 + [1])


@pytest.fixture(scope="module")
def toy():
    model = PairToy(K)
    data = label(random_structures(23, seed=3, sizes=(2, 7)), model, THETA, noise=2e-3,
                 config_types=["bulk", "rattled", "surface"])
    ts = load_training_set(data, virial_key="virial", eref="zero",
                           weights={"rattled": {"E": 5.0, "F": 0.5}, "surface": {"V": 0.0}})
    return model, ts


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("solver,options", [("qr", {"lam": 1e-3}), ("blr", {}), ("ard", {}), ("rrqr", {})])
def test_streaming_equals_in_memory(toy, solver, options):
    model, ts = toy
    gamma = np.linspace(1.0, 3.0, K)
    ref = fit_linear(ts, model, solver=solver, solver_options=options, gamma=gamma, streaming=False, progress=False)
    for bs in (1, 4, 100):
        rep = fit_linear(ts, model, solver=solver, solver_options=options, gamma=gamma, block_size=bs,
                         progress=False)
        assert rep.result.info["assembly"]["n_blocks"] == -(-len(ts) // bs)
        assert _rel(rep.coefficients, ref.coefficients) < 1e-10
        np.testing.assert_array_equal(rep.y, ref.y)
        np.testing.assert_allclose(rep.predictions, ref.predictions, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(rep.meta.structure, ref.meta.structure)
        np.testing.assert_array_equal(rep.meta.kind, ref.meta.kind)
        assert rep.errors["set"]["F"]["mae"] == pytest.approx(ref.errors["set"]["F"]["mae"], rel=1e-10)
        assert rep.errors["config_types"].keys() == ref.errors["config_types"].keys()
        if solver == "blr":  # the evidence is exact from the compressed system
            assert rep.result.info["n_obs"] == ref.result.info["n_obs"]
            assert rep.result.info["log_evidence"] == pytest.approx(ref.result.info["log_evidence"], rel=1e-10)
            for h in ("alpha", "beta"):
                assert rep.result.hyperparameters[h] == pytest.approx(ref.result.hyperparameters[h], rel=1e-9)
            np.testing.assert_allclose(rep.result.covariance, ref.result.covariance, rtol=1e-8,
                                       atol=1e-12 * np.abs(ref.result.covariance).max())


def test_streaming_with_fewer_rows_than_parameters(toy):
    model, _ = toy
    data = label(random_structures(6, seed=9), model, THETA)
    ts = load_training_set(data, force_key=None, eref="zero")  # 6 energy rows, 9 parameters
    # (an interpolating fit: the evidence grows without bound in β, so β is fixed here)
    for solver, options in (("qr", {"lam": 1e-3}), ("blr", {"beta": 1e4})):
        ref = fit_linear(ts, model, solver=solver, solver_options=options, streaming=False, progress=False)
        rep = fit_linear(ts, model, solver=solver, solver_options=options, block_size=2, progress=False)
        assert _rel(rep.coefficients, ref.coefficients) < 1e-10
    assert rep.result.info["log_evidence"] == pytest.approx(ref.result.info["log_evidence"], rel=1e-10)


def test_worker_processes_give_the_same_fold(toy):
    model, ts = toy
    one = fit_linear(ts, model, solver="blr", block_size=3, workers=1, progress=False)
    two = fit_linear(ts, model, solver="blr", block_size=3, workers=2, progress=False)
    # blocks are folded in block order whoever evaluates them: the same fold up to the BLAS
    # threads of the block QR (one per worker process)
    np.testing.assert_allclose(two.coefficients, one.coefficients, rtol=1e-12, atol=0)
    np.testing.assert_allclose(two.predictions, one.predictions, rtol=1e-12, atol=1e-14)
    with pytest.raises(FitError, match="workers must be an integer >= 1"):
        fit_linear(ts, model, workers=0, progress=False)
    with pytest.raises(FitError, match="block_size must be an integer >= 1"):
        fit_linear(ts, model, block_size=0, progress=False)


def test_dask_local_cluster_gives_the_same_coefficients(toy):
    distributed = pytest.importorskip("distributed")
    model, ts = toy
    one = fit_linear(ts, model, solver="blr", block_size=4, progress=False)
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        rep = fit_linear(ts, model, solver="blr", block_size=4, client=client, progress=False)
        # BLAS / OpenMP limited to one thread inside each task
        limits = client.submit(_thread_limits_in_task, pure=False).result()
    np.testing.assert_allclose(rep.coefficients, one.coefficients, rtol=1e-12, atol=0)
    np.testing.assert_allclose(rep.predictions, one.predictions, rtol=1e-12, atol=1e-14)
    assert limits and all(n == 1 for n in limits)


def _thread_limits_in_task():
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(1):
        return [d["num_threads"] for d in threadpool_info()]


def test_worker_processes_use_one_blas_thread():
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp

    from acegen.fit.stream import _init_worker

    pytest.importorskip("threadpoolctl")
    with ProcessPoolExecutor(1, mp_context=mp.get_context("fork"), initializer=_init_worker,
                             initargs=(None, None)) as pool:
        limits = pool.submit(_thread_counts).result()
    assert limits and all(n == 1 for n in limits)


def _thread_counts():
    from threadpoolctl import threadpool_info

    return [d["num_threads"] for d in threadpool_info()]


class _Stop(Exception):
    pass


def test_interrupted_assembly_resumes_from_the_folded_blocks(toy, tmp_path):
    model, ts = toy
    full = fit_linear(ts, model, solver="blr", block_size=4, progress=False)
    n_blocks = full.result.info["assembly"]["n_blocks"]
    assert n_blocks == 6
    seen = []

    def stop_after_two(b, n):
        seen.append(b)
        if b == 2:
            raise _Stop

    with pytest.raises(_Stop):
        fit_linear(ts, model, solver="blr", block_size=4, resume=tmp_path, signature="toy9",
                   callback=stop_after_two, progress=False)
    assert seen == [0, 1, 2]
    seen.clear()
    rep = fit_linear(ts, model, solver="blr", block_size=4, resume=tmp_path, signature="toy9",
                     callback=lambda b, n: seen.append(b), progress=False)
    assert seen == [3, 4, 5]  # only the rest
    assert rep.result.info["assembly"]["resumed_from"] == 3
    np.testing.assert_array_equal(rep.coefficients, full.coefficients)
    # a complete checkpoint: nothing is folded again, another solver works from it
    seen.clear()
    ridge = fit_linear(ts, model, solver="qr", block_size=4, resume=tmp_path, signature="toy9",
                       callback=lambda b, n: seen.append(b), progress=False)
    assert seen == []
    ref = fit_linear(ts, model, solver="qr", streaming=False, progress=False)
    assert _rel(ridge.coefficients, ref.coefficients) < 1e-10
    # another basis signature or block size is another key: assembled from the start
    seen.clear()
    fit_linear(ts, model, block_size=4, resume=tmp_path, signature="other", callback=lambda b, n: seen.append(b),
               progress=False)
    assert seen == list(range(6))


def test_checkpoint_is_verified_on_load(toy, tmp_path):
    model, ts = toy
    key = checkpoint_key(ts, "toy9", 4)
    ck = Checkpoint(tmp_path, key)
    with pytest.raises(_Stop):
        compress_stream(model, ts, block_size=4, checkpoint=ck, progress=False,
                        callback=lambda b, n: (_ for _ in ()).throw(_Stop) if b == 1 else None)
    comp, done = ck.load()
    assert done == 2 and comp is not None
    # tamper with the stored factor: the digest no longer matches, the fold starts again
    with np.load(ck.path) as f:
        saved = {k: f[k] for k in f.files}
    saved["R"] = saved["R"] * (1 + 1e-9)
    np.savez(ck.path, **saved)
    with pytest.warns(UserWarning, match="fails verification"):
        assert ck.load() == (None, 0)
    ck.path.write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="unreadable"):
        assert ck.load() == (None, 0)
    # another data set is another key
    ts2 = load_training_set([s.atoms for s in ts.structures[:-1]], virial_key="virial", eref="zero")
    assert checkpoint_key(ts2, "toy9", 4) != key
    with pytest.raises(FitError, match="resume needs a basis signature"):
        fit_linear(ts, model, resume=tmp_path, progress=False)


def test_progress_bar_over_blocks(toy, capsys):
    model, ts = toy
    fit_linear(ts, model, block_size=8, progress=True)
    err = capsys.readouterr().err
    assert "assembling" in err and "3/3" in err
    fit_linear(ts, model, block_size=8, progress=False)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------- data
def _frame(toy_model, n=5):
    pd = pytest.importorskip("pandas")
    data = label(random_structures(n, seed=4), toy_model, THETA)
    rows = []
    for k, a in enumerate(data):
        atoms = a.copy()
        e, f = a.info["energy"], a.arrays["forces"]
        del atoms.info["energy"], atoms.arrays["forces"]
        rows.append({"name": f"s{k}", "ase_atoms": atoms, "energy": e + 7.0, "energy_corrected": e,
                     "forces": f, "w_energy": 0.5 + k, "w_forces": np.full(len(a), 2.0 + k)})
    return pd.DataFrame(rows), data


def test_pacemaker_data_frame_and_data_weights(tmp_path):
    model = PairToy(K)
    df, data = _frame(model)
    path = tmp_path / "train.pckl.gzip"
    df.to_pickle(path, compression="gzip")
    got = read_structures(path)
    assert len(got) == len(data)
    for a, b in zip(got, data):
        assert a.info["energy"] == b.info["energy"]  # energy_corrected preferred
        np.testing.assert_array_equal(a.arrays["forces"], b.arrays["forces"])
        np.testing.assert_array_equal(a.positions, b.positions)
    ts = load_training_set(str(path), eref="zero", weight_keys={"E": "w_energy", "F": "w_forces"})
    for k, s in enumerate(ts.structures):
        n = s.n_atoms
        assert s.weights["E"] == pytest.approx(30.0 / np.sqrt(n) * np.sqrt(0.5 + k))
        np.testing.assert_allclose(s.weights["F"], np.full(3 * n, np.sqrt(2.0 + k)))
    plain = load_training_set(str(path), eref="zero")
    assert plain.structures[1].weights["F"] == 1.0
    # the weights reach the design-matrix rows and change the fit (noisy data)
    rep = fit_linear(ts, model, solver="qr", progress=False)
    ref = fit_linear(ts, model, solver="qr", streaming=False, progress=False)
    assert _rel(rep.coefficients, ref.coefficients) < 1e-10
    # without energy_corrected, "energy" is used
    df.drop(columns=["energy_corrected"]).to_pickle(tmp_path / "b.pkl.gz", compression="gzip")
    assert read_structures(tmp_path / "b.pkl.gz")[0].info["energy"] == data[0].info["energy"] + 7.0


def test_pacemaker_errors(tmp_path, monkeypatch):
    pd = pytest.importorskip("pandas")
    pd.DataFrame({"x": [1]}).to_pickle(tmp_path / "bad.pckl.gzip", compression="gzip")
    with pytest.raises(FitError, match="no 'ase_atoms' column"):
        read_structures(tmp_path / "bad.pckl.gzip")
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(FitError, match="needs pandas"):
        read_structures(tmp_path / "bad.pckl.gzip")


def test_extxyz_weight_key_and_lazy_reading(tmp_path):
    model = PairToy(K)
    data = label(random_structures(4, seed=5), model, THETA)
    for k, a in enumerate(data):
        a.info["w"] = float(k + 1)
    ase.io.write(tmp_path / "d.xyz", data)
    ts = load_training_set(str(tmp_path / "d.xyz"), eref="zero", virial_key="virial", weight_keys="w")
    s = ts.structures[3]
    assert s.weights["E"] == pytest.approx(30.0 / np.sqrt(s.n_atoms) * 2.0)
    assert s.weights["F"] == pytest.approx(2.0) and s.weights["V"] == pytest.approx(2.0 / np.sqrt(s.n_atoms))
    data[2].info["w"] = -1.0
    with pytest.raises(TargetError, match="structure 2: key 'w': negative weight"):
        load_training_set(data, eref="zero", weight_keys={"E": "w"})
    with pytest.raises(FitError, match="unknown observation 'X'"):
        load_training_set(data, eref="zero", weight_keys={"X": "w"})
    # frames are read one by one: a broken later frame still names the file
    text = (tmp_path / "d.xyz").read_text()
    (tmp_path / "broken.xyz").write_text(text + "3\nbroken\nSi 0 0\n")
    with pytest.raises(FitError, match="broken.xyz: cannot read structures"):
        read_structures(tmp_path / "broken.xyz")


def test_config_assembly_section(tmp_path):
    (tmp_path / "t.xyz").write_text("")
    c = tmp_path / "c.yaml"
    base = {"basis": {"elements": ["Si"], "order": 2, "totaldegree": 6}, "data": {"train": "t.xyz"}}
    cfg = parse_config({**base, "data": {"train": "t.xyz", "weight_keys": {"E": "w_energy"}},
                        "assembly": {"block_size": 8, "workers": 2, "resume": "ckpt",
                                     "scheduler": "tcp://h:8786"}}, c)
    assert (cfg.block_size, cfg.workers, cfg.scheduler, cfg.streaming) == (8, 2, "tcp://h:8786", True)
    assert cfg.resume == tmp_path / "ckpt" and cfg.weight_keys == {"E": "w_energy"}
    assert parse_config(base, c).resume is False and parse_config(base, c).block_size == 32
    for bad, field in (({"block_size": 0}, "assembly.block_size"), ({"workers": "2"}, "assembly.workers"),
                       ({"streaming": 1}, "assembly.streaming"), ({"foo": 1}, "assembly.foo"),
                       ({"resume": 3}, "assembly.resume")):
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            parse_config({**base, "assembly": bad}, c)
    with pytest.raises(ConfigError, match=r"data\.weight_keys\.Q"):
        parse_config({**base, "data": {"train": "t.xyz", "weight_keys": {"Q": "w"}}}, c)


def test_fit_from_config_assembly_options(tmp_path, monkeypatch):
    import json
    from types import SimpleNamespace

    import acegen
    import acegen.model
    from acegen.fit import fit_from_config

    class Stub:
        def __init__(self, spec, coefficients, *, name="model"):
            self.spec, self.coefficients = spec, np.asarray(coefficients)

        def save(self, path):
            path.write_text(json.dumps(self.coefficients.tolist()))

    monkeypatch.setattr(acegen.model, "Model", Stub)
    model = PairToy(K)
    basis = SimpleNamespace(spec=acegen.BasisSpec(["Si"], 2, 6), functions=[],
                            pair=[SimpleNamespace(z0=0, zj=0, n=k + 1) for k in range(K)], n_params=K,
                            signature=lambda: "toy-basis")
    data = label(random_structures(14, seed=6), model, THETA, noise=1e-3)
    ase.io.write(tmp_path / "train.xyz", data[:10])
    ase.io.write(tmp_path / "test.xyz", data[10:])
    tables = {}
    for name, asm in (("mem", "{streaming: false}"), ("stream", "{block_size: 3, workers: 2, resume: ck}")):
        (tmp_path / f"{name}.yaml").write_text(
            "basis: {elements: [Si], order: 2, totaldegree: 6}\n"
            "data: {train: train.xyz, test: test.xyz, virial_key: virial, eref: zero}\n"
            f"output: {{directory: {name}}}\nprogress: false\nassembly: {asm}\n")
        m = fit_from_config(tmp_path / f"{name}.yaml", basis=basis, basis_evaluator=model, verbose=False)
        tables[name] = (m.coefficients, json.loads((tmp_path / name / "errors.json").read_text()))
    assert _rel(tables["stream"][0], tables["mem"][0]) < 1e-10
    for ds in ("train", "test"):
        for q in ("E", "F", "V"):
            assert tables["stream"][1][ds]["set"][q]["mae"] == pytest.approx(tables["mem"][1][ds]["set"][q]["mae"],
                                                                             rel=1e-8)
    assert len(list((tmp_path / "ck").glob("*.npz"))) == 1
