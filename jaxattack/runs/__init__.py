"""The experiments a user starts.

- ``attack``: ``AttackConfig`` (every setting, declared once) and ``attack()``;
- ``minimum_k``: the smallest k per image;
- ``sweep``: grids of experiments into a resumable results store;
- ``robust``: ``evaluate``, robust accuracy per k from a cascade of attacks;
- ``distributed``: several processes with ``jax.distributed``.
"""
