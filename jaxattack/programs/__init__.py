"""Traced programs, below every model.

- ``jaxprs``: a traced function as a flat program of equations, replayed with a rule
  per primitive;
- ``convs``: the convolution forms XLA:CPU runs fast, and the lowering that computes
  any model's convolutions in them.
"""
