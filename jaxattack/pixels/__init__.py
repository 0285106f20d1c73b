"""The pixel threat model: everything that knows a candidate is k pixels of an image.

- ``problems``: which (image, target) pairs a mode attacks, their keys and arrays;
- ``objective``: fitness, success and early stop from class probabilities;
- ``evaluation``: the engine's evaluation functions for images (dense or sparse);
- ``verify``: paint each final candidate on the host and classify it afresh;
- ``result``, ``stats``: ``AttackResult`` and the paper's statistics;
- ``inputs``: input checks with one-line errors.
"""
