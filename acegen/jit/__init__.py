"""Just-in-time compilation: the system C toolchain, the kernel cache and the cffi loader.

* :mod:`acegen.jit.toolchain` -- find and probe the C compiler, flags, :class:`Toolchain`;
* :mod:`acegen.jit.cache` -- content-hash cache of shared libraries (:func:`build_library`);
* :mod:`acegen.jit.load` -- :class:`CompiledKernel`, a loaded library callable on NumPy arrays.
* :mod:`acegen.jit.llvm_cache` -- the object cache of the LLVM backend (imported on demand:
  it needs llvmlite).
"""

from .cache import build_library, cache_key, kernels_dir
from .load import CompiledKernel
from .toolchain import Toolchain, detect

__all__ = ["CompiledKernel", "Toolchain", "build_library", "cache_key", "detect", "kernels_dir"]
