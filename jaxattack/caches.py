"""Caches of jitted and compiled programs, and the one way to drop them.

Programs are cached per classifier and settings so that repeated attacks do not
recompile; the cache holds a reference to each classifier (and its parameters) until
it is evicted or :func:`clear_caches` is called.
"""

from __future__ import annotations

import functools

_CACHES: list = []


def memoize(maxsize: int):
    """``functools.lru_cache(maxsize)``, registered with :func:`clear_caches`."""

    def wrap(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)
        _CACHES.append(cached)
        return cached

    return wrap


def registered(table: dict) -> dict:
    """A module-level dict that :func:`clear_caches` empties too."""
    _CACHES.append(table)
    return table


def clear_caches() -> None:
    """Forget every cached program (and the classifiers they hold), and JAX's own caches."""
    import jax

    for cached in _CACHES:
        cached.cache_clear() if hasattr(cached, "cache_clear") else cached.clear()
    jax.clear_caches()
