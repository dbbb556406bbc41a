"""PACE file readers, B→C-tilde conversion, validation and the .yace writer.

Independent references: the function/ms-combination counts that pyace 0.4.0rc1 reports
(../shared/potentials/SOURCES.md), pyace's own conversions of the B-basis files
(../shared/potentials/derived/*.from_yaml.yace), pyace's re-save of the .ace file as .yace,
and sympy's exact Clebsch–Gordan coefficients.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
from sympy.physics.wigner import clebsch_gordan as sympy_cg

from acegen.errors import ModelFileError
from acegen.io.pace import (
    PacePotential,
    bbasis_to_ctilde,
    clebsch_gordan,
    coupling_tree,
    read_ace,
    read_bbasis_yaml,
    read_pace,
    read_yace,
    write_yace,
)

from .conftest import SHARED, SHARED_MISSING

POT = SHARED / "potentials"
pytestmark = pytest.mark.skipif(not POT.is_dir(), reason=SHARED_MISSING)

# (C-tilde functions, total ms-combinations) as reported by pyace 0.4.0rc1 (SOURCES.md)
COUNTS = {
    "Cu-PBE-core-rep.ace": (742, 5905),
    "YBCO_ACE.yace": (2784, 4328),
    "YBCO_ACE.yaml": (2784, 4328),
    "Cu-III.yaml": (62, 142),
    "Cu-I.yaml": (81, 186),
    "Cu.pbe.in.yaml": (683, 5560),
    "DFT10B-AgCu.yaml": (120, 204),
    "Al.pbe.13.2.yaml": (197, 924),
    "ethanol.yaml": (1131, 1914),
    "Al.pbe.rhocore.ace": (129, 511),
    "Al-Ni_opt_all.yace": (17, 37),
    "ZBL_rep.yaml": (5, 5),
}
ALL_FILES = sorted(COUNTS) + [
    "derived/Cu-PBE-core-rep.yace",
    "derived/Cu-III.from_yaml.yace",
    "derived/Cu.pbe.in.from_yaml.yace",
    "derived/YBCO_ACE.from_yaml.yace",
]


@pytest.fixture(scope="module")
def potentials():
    return {name: read_pace(POT / name) for name in ALL_FILES}


# ---------------------------------------------------------------------------------- reading
@pytest.mark.parametrize("name", sorted(COUNTS))
def test_function_and_ms_counts_match_pyace(potentials, name):
    pot = potentials[name]
    nfunc = sum(len(v) for v in pot.functions.values())
    nms = sum(f.num_ms_combs for v in pot.functions.values() for f in v)
    assert (nfunc, nms) == COUNTS[name]


def test_typed_fields(potentials):
    pot = potentials["YBCO_ACE.yace"]
    assert isinstance(pot, PacePotential)
    assert pot.elements == ("Ba", "Cu", "O", "Y")
    assert len(pot.bonds) == 16 and pot.inner_cutoff_type == "zbl"
    b = pot.bonds[(0, 1)]
    assert b.radbasename == "SBessel" and b.crad.shape == (b.nradmax, b.lmax + 1, b.nradbase) == (6, 3, 8)
    assert b.rcut_in == pytest.approx(1.5519667006559754)
    f = pot.functions[2][-1]
    assert f.ms_combs.shape == (f.num_ms_combs, f.rank) and f.ctildes.shape == (f.num_ms_combs, 2)
    assert all(f.rank == 1 for f in pot.functions[0][:34])  # rank-1 functions first
    ace = potentials["Cu-PBE-core-rep.ace"]
    assert ace.bonds[(0, 0)].radbasename == "ChebPow" and ace.bonds[(0, 0)].crad.shape == (5, 7, 16)
    assert ace.embeddings[0].npoti == "FinnisSinclairShiftedScaled" and ace.embeddings[0].fs_parameters == (1, 1, 1, 0.5)
    assert ace.bonds[(0, 0)].prehc == 400.0 and ace.bonds[(0, 0)].lambdahc == 7.0


def test_ace_crad_loop_order():
    """.ace stores crad k-outermost: the first line after 'crad=' is crad[n=0][l=0..lmax][k=0]."""
    text = (POT / "Cu-PBE-core-rep.ace").read_text()
    first = [float(x) for x in text.split("crad=")[1].splitlines()[0].split()]
    pot = read_ace(POT / "Cu-PBE-core-rep.ace")
    np.testing.assert_array_equal(pot.bonds[(0, 0)].crad[0, :, 0], first)


def test_ace_equals_pyace_resave(potentials):
    """derived/Cu-PBE-core-rep.yace is pyace's save_yaml of the .ace: identical numbers."""
    assert potentials["Cu-PBE-core-rep.ace"] == potentials["derived/Cu-PBE-core-rep.yace"]


def test_flat_radcoefficients_reshaped_like_pace(potentials):
    """Cu.pbe.in.yaml has the old flat radcoefficients (k outer, n, l inner)."""
    pot = potentials["Cu.pbe.in.yaml"]
    pyace = potentials["derived/Cu.pbe.in.from_yaml.yace"]
    np.testing.assert_array_equal(pot.bonds[(0, 0)].crad, pyace.bonds[(0, 0)].crad)


# ------------------------------------------------------------------------ B → C-tilde
@pytest.mark.parametrize(
    "yaml_name, yace_name",
    [
        ("Cu-III.yaml", "derived/Cu-III.from_yaml.yace"),
        ("Cu.pbe.in.yaml", "derived/Cu.pbe.in.from_yaml.yace"),
        ("YBCO_ACE.yaml", "derived/YBCO_ACE.from_yaml.yace"),
        ("YBCO_ACE.yaml", "YBCO_ACE.yace"),
    ],
)
def test_bbasis_conversion_matches_pyace(potentials, yaml_name, yace_name):
    ours, ref = potentials[yaml_name], potentials[yace_name]
    assert ours.elements == ref.elements and ours.E0 == ref.E0
    assert ours.embeddings == ref.embeddings and ours.bonds == ref.bonds
    for mu in ref.functions:
        a, b = ours.functions[mu], ref.functions[mu]
        assert [(f.rank, f.mus, f.ns, f.ls) for f in a] == [(f.rank, f.mus, f.ns, f.ls) for f in b]
        for fa, fb in zip(a, b):
            np.testing.assert_array_equal(fa.ms_combs, fb.ms_combs)
            scale = np.abs(fb.ctildes).max(axis=1, keepdims=True) + 1e-300
            assert np.all(np.abs(fa.ctildes - fb.ctildes) <= 1e-12 * scale)


def test_bbasis_reader_keeps_blocks():
    bb = read_bbasis_yaml(POT / "DFT10B-AgCu.yaml")
    assert [b.name for b in bb.blocks] == ["Ag", "Ag Cu", "Cu", "Cu Ag"]
    assert bb.blocks[0].radial.radbase == "ChebExpCos" and bb.blocks[0].ndensity == 2
    assert bb.blocks[1].ndensity is None and bb.blocks[1].species == ("Ag", "Cu")
    pot = bbasis_to_ctilde(bb)
    assert pot.elements == ("Ag", "Cu") and set(pot.bonds) == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_clebsch_gordan_matches_sympy():
    for j1 in range(4):
        for j2 in range(4):
            for J in range(abs(j1 - j2), j1 + j2 + 1):
                for m1 in range(-j1, j1 + 1):
                    for m2 in range(-j2, j2 + 1):
                        M = m1 + m2
                        if abs(M) > J:
                            continue
                        ref = float(sympy_cg(j1, j2, J, m1, m2, M))
                        assert clebsch_gordan(j1, m1, j2, m2, J, M) == pytest.approx(ref, rel=1e-15, abs=1e-15)
    assert clebsch_gordan(6, 3, 6, -3, 12, 0) == pytest.approx(float(sympy_cg(6, 6, 12, 3, -3, 0)), rel=1e-15)
    assert clebsch_gordan(1, 1, 1, 1, 1, 2) == 0.0  # |M| > J


def test_coupling_tree_is_a_binary_tree():
    for rank in range(2, 8):
        tree = coupling_tree(rank)
        assert len(tree) == rank - 1
        outs = [c for _, _, c in tree]
        ins = [x for a, b, _ in tree for x in (a, b)]
        assert outs[-1] == 2 * rank - 2
        assert sorted(ins) == sorted(list(range(rank)) + outs[:-1])  # every leaf/intermediate used once
        for k, (a, b, c) in enumerate(tree):  # children are computed before their parent
            assert all(x < rank or x in outs[:k] for x in (a, b))
    assert coupling_tree(3) == ((0, 1, 3), (3, 2, 4))  # ((l1 l2)L12 l3) with L12 = lint[0]
    assert coupling_tree(4) == ((0, 1, 4), (2, 3, 5), (4, 5, 6))


# ---------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("name", ALL_FILES)
def test_write_read_round_trip(potentials, name, tmp_path):
    pot = potentials[name]
    out = tmp_path / "out.yace"
    write_yace(pot, out)
    again = read_yace(out)
    assert again == pot
    text = out.read_text()
    assert text.startswith("elements: [") and "\nbonds:\n  [0, 0]: {nradmax: " in text and "\nfunctions:\n  0:" in text


# ---------------------------------------------------------------------------- validation
def _expect(path, field):
    with pytest.raises(ModelFileError) as ei:
        read_pace(path)
    assert ei.value.field is not None and field in ei.value.field, (ei.value.field, str(ei.value))
    assert str(path) in str(ei.value)


YACE_CASES = [
    # (regex, replacement, field)
    (r"rcut: 8\.6999999999999993", "rcut: -1", "bonds[0,0].rcut"),
    (r"rcut: 8\.6999999999999993", "rcut: 0", "bonds[0,0].rcut"),
    (r"radbasename: ChebPow", "radbasename: Foo", "bonds[1,1].radbasename"),
    (r"elements: \[Al, Ni\]", "elements: [Al, Al]", "elements"),
    (r"elements: \[Al, Ni\]", "elements: [Al, Xx]", "elements[1]"),
    (r"elements: \[Al, Ni\]", "elements: [al, Ni]", "elements[0]"),
    (r"elements: \[Al, Ni\]", "elements: [Al, 3]", "elements[1]"),
    (r"E0: \[0, 0\]", "E0: [0]", "E0"),
    (r"E0: \[0, 0\]", "E0: [0, .nan]", "E0[1]"),
    (r"E0: \[0, 0\]", "E0: [0, .inf]", "E0[1]"),
    (r"deltaSplineBins: 0\.001\n", "", "deltaSplineBins"),
    (r"deltaSplineBins: 0\.001", "deltaSplineBins: -0.001", "deltaSplineBins"),
    (r"nradmax: 1, lmax: 2, nradbasemax: 2", "nradmax: abc, lmax: 2, nradbasemax: 2", "bonds[0,0].nradmax"),
    (r"nradmax: 1, lmax: 2, nradbasemax: 2", "nradmax: 1.5, lmax: 2, nradbasemax: 2", "bonds[0,0].nradmax"),
    (r"nradmax: 1, lmax: 2, nradbasemax: 2", "nradmax: 2, lmax: 2, nradbasemax: 2", "bonds[0,0].radcoefficients"),
    (r"radparameters: \[3\]", "radparameters: [true]", "bonds[0,0].radparameters[0]"),
    (r"FS_parameters: \[1, 1\]", "FS_parameters: [1, 1, 1]", "embeddings[0].FS_parameters"),
    (r"npoti: FinnisSinclair,", "npoti: Foo,", "embeddings[0].npoti"),
    (r"  1: \{ndensity: 2", "  5: {ndensity: 2", "embeddings"),
    (r"  \[1, 0\]: ", "  [1, 7]: ", "bonds"),
    (r"dcut: 0\.01\}", "dcut: 0.01, inner_cutoff_type: zbl}", "inner_cutoff_type"),
    (r"dcut: 0\.01\}", "dcut: 0.01, inner_cutoff_type: magic}", "inner_cutoff_type"),
    (r"mus: \[0\], ns: \[1\]", "mus: [0], ns: [9]", "functions[0][0].ns[0]"),
    (r"mus: \[0\], ns: \[1\]", "mus: [5], ns: [1]", "functions[0][0].mus[0]"),
    (r"ns: \[1, 1\], ls: \[1, 1\], ms_combs: \[0, 0, 1, -1\]", "ns: [1, 1], ls: [3, 3], ms_combs: [0, 0, 1, -1]",
     "functions[0][3].ls[0]"),
    (r"ms_combs: \[0, 0, 1, -1\]", "ms_combs: [0, 0, 1, 1]", "functions[0][3].ms_combs"),
    (r"ms_combs: \[0, 0, 1, -1\]", "ms_combs: [0, 0, 2, -2]", "functions[0][3].ms_combs"),
    (r"ms_combs: \[0, 0, 1, -1\]", "ms_combs: [0, 0, 1]", "functions[0][3].ms_combs"),
    (r"ctildes: \[16\.771745065062149, -33\.543490130124297\]", "ctildes: [16.77]", "functions[0][3].ctildes"),
    (r"ctildes: \[16\.771745065062149,", "ctildes: [.nan,", "functions[0][3].ctildes[0]"),
    (r"ctildes: \[16\.771745065062149,", "ctildes: [abc,", "functions[0][3].ctildes[0]"),
    (r"\{mu0: 0, rank: 1, ndensity: 1, num_ms_combs: 1, mus: \[0\], ns: \[1\]",
     "{mu0: 0, rank: 1, ndensity: 2, num_ms_combs: 1, mus: [0], ns: [1]", "functions[0][0]"),
    (r"\{mu0: 0, rank: 1, ndensity: 1, num_ms_combs: 1, mus: \[0\], ns: \[1\]",
     "{rank: 1, ndensity: 1, num_ms_combs: 1, mus: [0], ns: [1]", "functions[0][0].mu0"),
    (r"^elements:", "elements: [Al, Ni]\nelements:", "yaml"),  # duplicate key
    (r"^elements:", "{[", "yaml"),
]


@pytest.mark.parametrize("pattern, repl, field", YACE_CASES)
def test_broken_yace_names_field(tmp_path, pattern, repl, field):
    text = (POT / "Al-Ni_opt_all.yace").read_text()
    new, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    assert n == 1, pattern
    p = tmp_path / "broken.yace"
    p.write_text(new)
    _expect(p, field)


ACE_CASES = [
    (r"nelements=1", "nelements=x", "nelements"),
    (r"elements: Al", "elements: Qq", "elements[0]"),
    (r"lmax=5", "lmax=-1", "lmax"),
    (r"radbasename=ChebExpCos", "radbasename=SBessel", "radbasename"),
    (r"radbasename=ChebExpCos", "radbasename=ACE.jl.Basic", "radbasename"),
    (r"cutoff= 8\.699999999999999289", "cutoff= -8.7", "cutoff[0,0]"),
    (r"crad= 0\.001462380945283708", "crad= abc", "crad[0,0]"),
    (r"crad= 0\.001462380945283708", "crad= nan", "crad[0,0]"),
    (r"4 FS parameters:", "3 FS parameters:", "FS parameters"),
    (r"ndensitymax=2", "ndensitymax=3", "FS parameters"),
    (r"n=\( 1 \)", "n=( 99 )", "functions[0][0].ns[0]"),
    (r"< 0 >:", "< 1 >:", "functions[0][0]"),
]


@pytest.mark.parametrize("pattern, repl, field", ACE_CASES)
def test_broken_ace_names_field(tmp_path, pattern, repl, field):
    text = (POT / "Al.pbe.rhocore.ace").read_text()
    new, n = re.subn(pattern, repl, text, count=1)
    assert n == 1, pattern
    p = tmp_path / "broken.ace"
    p.write_text(new)
    _expect(p, field)


def test_ace_rank_and_l_checks(tmp_path):
    text = (POT / "Al.pbe.rhocore.ace").read_text()
    i = text.index("total_basis_size:")
    head, tail = text[:i], text[i:]
    bad = re.sub(r"l=\( (\d+)  (\d+) \)", "l=( 9  9 )", tail, count=1)
    p = tmp_path / "l.ace"
    p.write_text(head + bad)
    _expect(p, ".ls[0]")
    bad = re.sub(r"< (-?\d+)  (-?\d+) >:", "< 1  1 >:", tail, count=1)
    p.write_text(head + bad)
    _expect(p, ".ms_combs")


YAML_CASES = [
    (r"  DeltaSplineBins: 0\.001", "  DeltaSplineBins: 0", "global.DeltaSplineBins"),
    (r"^global:\n  DeltaSplineBins: 0\.001\n", "", "global"),
    (r"speciesblock: Cu$", "speciesblock: Cx", "species[0].speciesblock[0]"),
    (r"radbase: ChebExpCos", "radbase: Cheb", "species[0].radbase"),
    (r"rcutij: 7", "rcutij: 0", "species[0].rcutij"),
    (r"    lmaxi: 2\n", "", "species[0].lmaxi"),
    (r"    ndensityi: 2\n", "", "species[0].ndensityi"),
    (r"parameters: \[1, 1, 1, 0\.5\]", "parameters: [1, 1, 1]", "species[0].parameters"),
    (r"\{type: Cu Cu, nr: \[1\], nl: \[0\],", "{type: Ag Cu, nr: [1], nl: [0],", "species[0].nbody[0].type"),
    (r"\{type: Cu Cu, nr: \[1\], nl: \[0\],", "{type: Cu Cu, nr: [1, 2], nl: [0],", "species[0].nbody[0].nr"),
    (r"\{type: Cu Cu, nr: \[1\], nl: \[0\],", "{type: Cu Cu, nr: [99], nl: [0],", "species[0].nbody[0].nr"),
    (r"\{type: Cu Cu, nr: \[1\], nl: \[0\],", "{type: Cu Cu, nr: [1], nl: [1],", "species[0].nbody[0].nl"),
    (r"c: \[-0\.24287779979061802, 0\.053667636488673696\]", "c: [-0.24]", "species[0].nbody[0].c"),
    (r"nr: \[1, 1\], nl: \[1, 1\]", "nr: [1, 1], nl: [1, 2]", "nl"),
    (r"nr: \[1, 1\], nl: \[2, 2\]", "nr: [1, 1], nl: [3, 3]", "species[0].nbody"),
    (r"nl: \[0, 1, 1\], lint: \[1\]", "nl: [0, 1, 1], lint: [0]", "lint"),
    (r"nl: \[0, 1, 1\], lint: \[1\]", "nl: [0, 1, 1]", "lint"),
    (r"core-repulsion: \[0, 0\]", "core-repulsion: [0]", "species[0].core-repulsion"),
    (r"^species:", "species: []\nfoo:", "species"),
]


@pytest.mark.parametrize("pattern, repl, field", YAML_CASES)
def test_broken_bbasis_yaml_names_field(tmp_path, pattern, repl, field):
    text = (POT / "Cu-III.yaml").read_text()
    new, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    assert n == 1, pattern
    p = tmp_path / "broken.yaml"
    p.write_text(new)
    _expect(p, field)


def test_missing_dual_pair_block_is_mirrored_and_missing_pair_is_an_error(tmp_path):
    text = (POT / "DFT10B-AgCu.yaml").read_text()
    i = text.index("  - speciesblock: Cu Ag")
    p = tmp_path / "nodual.yaml"
    p.write_text(text[:i])
    pot = read_pace(p)
    assert pot.bonds[(1, 0)] == pot.bonds[(0, 1)]
    j = text.index("  - speciesblock: Ag Cu")
    k = text.index("  - speciesblock: Cu\n")
    p.write_text(text[:j] + text[k:i])
    _expect(p, "species")


@pytest.mark.parametrize("name", ["Al-Ni_opt_all.yace", "Al.pbe.rhocore.ace", "ZBL_rep.yaml"])
def test_truncated_files_raise_model_file_error(tmp_path, name):
    data = (POT / name).read_bytes()
    p = tmp_path / ("cut" + Path(name).suffix)
    for frac in np.linspace(0.02, 0.98, 25):
        cut = data[: int(len(data) * frac)]
        if cut.rstrip().endswith(b"}"):  # a complete, shorter function list is a valid file
            continue
        p.write_bytes(cut)
        with pytest.raises(ModelFileError):
            read_pace(p)


def corrupt(data: bytes, rng, alphabet: bytes) -> bytes:
    """``data`` with 1–4 random byte edits (replace, delete up to 8, insert up to 4) from ``alphabet``."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(b))
        op = rng.random()
        if op < 0.5:
            b[pos] = alphabet[rng.randrange(len(alphabet))]
        elif op < 0.75:
            del b[pos : pos + rng.randint(1, 8)]
        else:
            b[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
    return bytes(b)


@pytest.mark.parametrize("name", ["Al-Ni_opt_all.yace", "Al.pbe.rhocore.ace", "ZBL_rep.yaml"])
def test_random_corruption_never_escapes_as_another_exception(tmp_path, name):
    data = (POT / name).read_bytes()
    rng = random.Random(1234)
    p = tmp_path / ("bad" + Path(name).suffix)
    alphabet = b"0123456789-+.eE[]{}:, \nabcxyz#&*!|>'\"\t\x00\xff"
    for _ in range(150):
        p.write_bytes(corrupt(data, rng, alphabet))
        try:
            read_pace(p)
        except ModelFileError:
            pass


def test_unreadable_and_unknown_files(tmp_path):
    with pytest.raises(ModelFileError):
        read_pace(tmp_path / "missing.yace")
    p = tmp_path / "x.yace"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ModelFileError):
        read_pace(p)
    p.write_text("- just\n- a list\n")
    with pytest.raises(ModelFileError):
        read_pace(p)
    q = tmp_path / "x.json"
    q.write_text("{}")
    with pytest.raises(ModelFileError):
        read_pace(q)
