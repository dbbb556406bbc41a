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
