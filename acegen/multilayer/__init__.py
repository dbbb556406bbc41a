"""Multilayer ACE (Bochkarev, Lysogorskiy, Ortner, Csányi, Drautz 2022): the specification and
the symbolic basis of every layer (see docs/multilayer.md)."""

from .basis import IndicatorFunction, IndicatorLayerBasis, MultilayerBasis, lower, lower_multilayer
from .spec import MultilayerSpec

__all__ = ["IndicatorFunction", "IndicatorLayerBasis", "MultilayerBasis", "MultilayerSpec", "lower",
           "lower_multilayer"]
