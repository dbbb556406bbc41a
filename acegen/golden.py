"""Golden kernels: the emitted source of a few reference specs, committed under
``generated/`` so reviewers see every change to the generated code (as SymForce does), with
the text form of each spec's kernel plan (``<name>/plan.txt``,
:meth:`acegen.backends.plan.KernelPlan.to_text`), the layout every target renders from.

Regenerate with ``python -m acegen.golden`` (writes ``generated/``); ``tests/test_golden.py``
fails on any difference that was not regenerated and reviewed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REFERENCE_SPECS = {
    "cu_order2": dict(elements=["Cu"], order=2, totaldegree=6, rcut=4.5),
    "cuni_order3": dict(elements=["Cu", "Ni"], order=3, totaldegree=5, rcut=4.2),
}
TARGETS = ("c", "cuda", "llvm")


def reference_model(name: str):
    """A model with fixed, exactly representable coefficients θ_k = (−1)^k / 2^(k mod 7)."""
    from .basis import lower
    from .model import Model
    from .spec import BasisSpec

    spec = BasisSpec(**REFERENCE_SPECS[name])
    basis = lower(spec)
    k = np.arange(basis.n_params)
    theta = (-1.0) ** k / 2.0 ** (k % 7)
    return Model(spec, theta, name=name)


def _kernel_sources(ir, target: str) -> dict[str, str | bytes]:
    """The generated kernel itself (not the build files or examples around it)."""
    if target == "c":
        from .backends.c import emit_c

        return emit_c(ir)
    if target == "cuda":
        from .backends.cuda import emit_cuda

        return {k: v for k, v in emit_cuda(ir).items() if k.endswith((".cu", ".cuh"))}
    if target == "llvm":
        from .backends.llvm import emit_llvm

        return emit_llvm(ir)
    raise ValueError(target)


def render_all() -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {}
    from .backends.plan import build_plan

    for name in REFERENCE_SPECS:
        model = reference_model(name)
        files[f"{name}/plan.txt"] = build_plan(model.ir()).to_text()
        for target in TARGETS:
            for fname, text in _kernel_sources(model.ir(), target).items():
                if isinstance(text, str):
                    files[f"{name}/{target}/{fname}"] = text
    return files


def default_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "generated"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else default_dir()
    files = render_all()
    for rel, text in files.items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    print(f"wrote {len(files)} golden files under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
