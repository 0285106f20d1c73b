"""Search strategies on the shared engine; ``get(name, F=..., CR=...)`` builds one."""

from __future__ import annotations

from jaxattack.strategies.base import Strategy
from jaxattack.strategies.differential import DE, JDE
from jaxattack.strategies.sparse_rs import SparseRS

NAMES = ("de", "de-bin", "de-best", "de-ctb", "jde", "sparse-rs")


def get(name: str, F: float = 0.5, CR: float | None = None) -> Strategy:
    """The strategy called ``name``; ``F``/``CR`` apply to the DE variants
    (``de-bin`` uses CR = 0.5 when none is given)."""
    if name == "de":
        return DE(F, CR)
    if name == "de-bin":
        return DE(F, 0.5 if CR is None else CR, name="de-bin")
    if name == "de-best":
        return DE(F, CR, base="best", name="de-best")
    if name == "de-ctb":
        return DE(F, CR, base="current-to-best", name="de-ctb")
    if name == "jde":
        return JDE()
    if name == "sparse-rs":
        return SparseRS()
    raise ValueError(f"strategy must be one of {NAMES}, got {name!r}")


__all__ = ["DE", "JDE", "NAMES", "SparseRS", "Strategy", "get"]
