"""Exporters of trained models to other formats: NIR (export and import, the optional extra ``[nir]``).

``to_nir`` / ``save_nir`` write a graph (nir_export.py), ``from_nir`` / ``load_nir`` build a
network from one (nir_import.py); the ``nir`` package is imported only when they are called.
"""

from .nir_export import DELAYS_AS, FORMAT, MISSING, graph_summary, require_nir, save_nir, to_nir
from .nir_import import from_nir, load_nir, read_nir

__all__ = ["DELAYS_AS", "FORMAT", "MISSING", "graph_summary", "require_nir", "save_nir", "to_nir",
           "from_nir", "load_nir", "read_nir"]
