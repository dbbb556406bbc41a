"""Tests of acegen.spec.BasisSpec: defaults, validation, serialisation."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from ase.data import atomic_numbers, reference_states

from acegen.errors import SpecError
from acegen.spec import BasisSpec, default_bond_length


# ACEpotentials defaults quoted in the shared reference notes (rcut = 2.5 r0)
@pytest.mark.parametrize("el, r0, rcut", [("Cu", 2.6, 6.5), ("Si", 2.4, 6.0), ("Ni", 2.5, 6.25),
                                          ("Mo", 2.7, 6.75), ("Li", 3.0, 7.5), ("Ge", 2.5, 6.25)])
def test_default_r0_and_rcut_single_element(el, r0, rcut):
    s = BasisSpec([el], 3, 12)
    assert s.r0_pair(0, 0) == pytest.approx(r0)
    assert s.rcut_pair(0, 0) == pytest.approx(rcut)
    assert s.pair_rcut_pair(0, 0) == pytest.approx(rcut)


def test_default_multi_element_r0_is_pair_mean_and_rcut_uniform_max():
    s = BasisSpec(["Cu", "Li"], 2, 8)
    assert s.r0_pair(0, 1) == pytest.approx((2.6 + 3.0) / 2)
    assert s.r0_pair(1, 0) == s.r0_pair(0, 1)
    assert s.r0_pair(1, 1) == pytest.approx(3.0)
    for i in range(2):
        for j in range(2):
            assert s.rcut_pair(i, j) == pytest.approx(2.5 * 3.0)
    assert s.rcut_max == pytest.approx(7.5)


def test_bond_length_fallback_uses_reference_crystal():
    # argon is not in the ACEpotentials table; its ASE reference state is fcc
    ref = reference_states[atomic_numbers["Ar"]]
    assert ref["symmetry"] == "fcc"
    assert default_bond_length("Ar") == pytest.approx(ref["a"] / math.sqrt(2), abs=1e-4)
    # Mn: complex reference structure -> twice the covalent radius
    from ase.data import covalent_radii
    assert default_bond_length("Mn") == pytest.approx(2 * covalent_radii[25], abs=1e-4)


def test_totaldegree_scalar_and_vector():
    s = BasisSpec(["Cu"], 3, 12)
    assert s.totaldegree == (12, 12, 12)
    s2 = BasisSpec(["Cu"], 3, [20, 16, 12.0])
    assert s2.totaldegree == (20, 16, 12)
    assert isinstance(s2.totaldegree, tuple)
    assert s2.maxdeg(1) == 20 and s2.maxdeg(3) == 12
    assert s2.nmax == 20
    assert s2.pair_degree == 20
    assert BasisSpec(["Cu"], 2, 12.5).nmax == 12
    with pytest.raises(SpecError):
        s2.maxdeg(4)


def test_lmax_formula_examples():
    # largest l with nu + 2 wL l <= D_nu for some nu >= 2
    assert BasisSpec(["Cu"], 2, 8).lmax == 2        # 2 + 3 l <= 8
    assert BasisSpec(["Cu"], 3, 12).lmax == 3       # 2 + 3 l <= 12
    assert BasisSpec(["Cu"], 1, 12).lmax == 0
    assert BasisSpec(["Cu"], 3, [20, 4, 10]).lmax == 2   # nu = 3: 3 + 3 l <= 10


def test_explicit_pair_cutoffs():
    s = BasisSpec(["Cu", "Ni"], 2, 8, rcut={("Cu", "Cu"): 5.5, ("Ni", "Cu"): 5.0, "Ni-Ni": 4.5},
                  r0=2.5, pair_rcut=6.0)
    assert s.rcut_pair(0, 0) == 5.5
    assert s.rcut_pair(0, 1) == s.rcut_pair(1, 0) == 5.0
    assert s.rcut_pair(1, 1) == 4.5
    assert s.pair_rcut_pair(1, 0) == 6.0
    assert s.r0_pair(0, 1) == 2.5
    # pair_rcut defaults to rcut
    s2 = BasisSpec(["Cu", "Ni"], 2, 8, rcut=5.0)
    assert s2.pair_rcut_pair(0, 1) == 5.0
    with pytest.raises(SpecError):
        s.rcut_pair(0, 2)


def test_eref():
    s = BasisSpec(["Ti", "Al"], 3, 12, Eref={"Ti": -1586.0195, "Al": -105.5954})
    assert s.eref(0) == -1586.0195 and s.eref(1) == -105.5954
    s2 = BasisSpec(["Ti", "Al"], 3, 12, Eref={"Al": -1.0})
    assert s2.eref(0) == 0.0 and s2.eref(1) == -1.0
    assert BasisSpec(["Ti"], 2, 6).eref(0) == 0.0
    assert dict(s.Eref) == {"Ti": -1586.0195, "Al": -105.5954}
    assert BasisSpec(["Ti", "Al"], 3, 12, Eref=s.Eref) == s


@pytest.mark.parametrize("kwargs, field, bad", [
    (dict(elements=["Xx"]), "elements", "Xx"),
    (dict(elements=["Cu", "Cu"]), "elements", "Cu"),
    (dict(elements=[]), "elements", "[]"),
    (dict(elements="Cu"), "elements", "Cu"),
    (dict(order=0), "order", "0"),
    (dict(order=2.0), "order", "2.0"),
    (dict(totaldegree=[10, 8]), "totaldegree", "[10, 8]"),
    (dict(totaldegree=-3), "totaldegree", "-3"),
    (dict(totaldegree=[12, 12, 2]), "totaldegree", "2"),
    (dict(wL=0.0), "wL", "0.0"),
    (dict(wL=float("nan")), "wL", "nan"),
    (dict(rcut=-5.0), "rcut", "-5.0"),
    (dict(rcut={("Cu", "Ag"): 5.0}), "rcut", "Ag"),
    (dict(r0="long"), "r0", "long"),
    (dict(pair_rcut=0), "pair_rcut", "0"),
    (dict(pair_degree=0), "pair_degree", "0"),
    (dict(transform=("agnesi", 4, 2)), "transform", "4, 2"),
    (dict(transform=("agnesi", 1, 1)), "transform", "1, 1"),
    (dict(transform=("morse", 1, 3)), "transform", "morse"),
    (dict(envelope=("x", 2, 0)), "envelope", "0"),
    (dict(envelope=("r", 2)), "envelope", "'r'"),
    (dict(pair_envelope=("r", 0)), "pair_envelope", "0"),
    (dict(purification="full"), "purification", "full"),
    (dict(Eref={"Au": 1.0}), "Eref", "Au"),
    (dict(Eref={"Cu": float("inf")}), "Eref", "inf"),
    (dict(radial="chebyshev"), "radial", "chebyshev"),
])
def test_invalid_values_raise_spec_error_naming_field_and_value(kwargs, field, bad):
    base = dict(elements=["Cu"], order=3, totaldegree=12)
    base.update(kwargs)
    els, order, td = base.pop("elements"), base.pop("order"), base.pop("totaldegree")
    with pytest.raises(SpecError) as ei:
        BasisSpec(els, order, td, **base)
    msg = str(ei.value)
    assert f"BasisSpec.{field}" in msg
    assert bad in msg


def test_missing_pair_in_rcut_mapping():
    with pytest.raises(SpecError, match="missing pair"):
        BasisSpec(["Cu", "Ni"], 2, 8, rcut={("Cu", "Cu"): 5.0, ("Cu", "Ni"): 5.0})


def test_frozen_hashable_equal():
    a = BasisSpec(["Cu"], 3, 12)
    b = BasisSpec(("Cu",), 3, [12, 12, 12], rcut=6.5, r0=2.6)
    assert a == b and hash(a) == hash(b) and a.signature() == b.signature()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.order = 4  # type: ignore[misc]
    assert len({a, b}) == 1
    c = BasisSpec(["Cu"], 3, 12, wL=1.0)
    assert c != a and c.signature() != a.signature()


def _specs():
    yield BasisSpec(["Cu"], 3, [20, 16, 12])
    yield BasisSpec(["Ti", "Al"], 3, 12, Eref={"Ti": -1586.0195, "Al": -105.5954}, wL=2.0)
    yield BasisSpec(["Cu", "Ni", "Al"], 4, [25, 23, 20, 10],
                    rcut={("Cu", "Cu"): 5.1, ("Cu", "Ni"): 5.2, ("Cu", "Al"): 5.3,
                          ("Ni", "Ni"): 5.4, ("Ni", "Al"): 5.5, ("Al", "Al"): 5.6},
                    pair_envelope=("x", 0, 2), transform=("agnesi", 2, 6), purification="canonical",
                    pair_degree=7)
    yield BasisSpec(["Si"], 2, 12.5, wL=1.1, r0=2.35, rcut=5.0, pair_rcut=0.1 + 0.2)


@pytest.mark.parametrize("spec", list(_specs()))
def test_dict_json_round_trip_exact(spec):
    d = spec.to_dict()
    text = json.dumps(d)
    back = BasisSpec.from_dict(json.loads(text))
    assert back == spec
    assert back.to_dict() == d
    assert back.signature() == spec.signature()
    assert back.rcut_pair(0, 0) == spec.rcut_pair(0, 0)
    r = repr(spec)
    assert r.startswith("BasisSpec(") and all(repr(e) in r for e in spec.elements)


def test_from_dict_rejects_unknown_and_missing():
    with pytest.raises(SpecError, match="unknown field"):
        BasisSpec.from_dict({"elements": ["Cu"], "order": 2, "totaldegree": 8, "cutoff": 5})
    with pytest.raises(SpecError, match="order"):
        BasisSpec.from_dict({"elements": ["Cu"], "totaldegree": 8})
    with pytest.raises(SpecError, match="format"):
        BasisSpec.from_dict({"format": "other/9", "elements": ["Cu"], "order": 2, "totaldegree": 8})


def test_from_dict_minimal_uses_defaults():
    s = BasisSpec.from_dict({"elements": ["Cu"], "order": 2, "totaldegree": 8})
    assert s == BasisSpec(["Cu"], 2, 8)
    assert s.transform == ("agnesi", 2, 4) and s.pair_transform == ("agnesi", 1, 3)
    assert s.envelope == ("x", 2, 2) and s.pair_envelope == ("r", 2)
    assert s.purification == "pair" and s.wL == 1.5


def test_repr_is_readable():
    s = BasisSpec(["Cu", "Ni"], 2, 8, rcut={("Cu", "Cu"): 5.0, ("Cu", "Ni"): 5.5, ("Ni", "Ni"): 6.0})
    r = repr(s)
    assert "elements=('Cu', 'Ni')" in r and "Cu-Ni: 5.5" in r and "order=2" in r
