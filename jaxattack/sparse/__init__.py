"""The sparse forward pass: recompute only what the k changed pixels can reach.

Any classifier whose ``apply_fn`` traces gets a :class:`Plan`, read from its jaxpr
(``sparse.graph``: one rule per primitive): the clean image's activations are cached
once per problem, each candidate recomputes a window per pixel and node up to a
handover node picked by a cost model, and the rest runs dense. The probabilities equal
the dense forward's to float rounding (tested per zoo model and imported model).
"""

from jaxattack.sparse.nodes import Graph
from jaxattack.sparse.plan import Plan, plan, why_not
from jaxattack.sparse.rules import graph

__all__ = ["Graph", "Plan", "graph", "plan", "why_not"]
