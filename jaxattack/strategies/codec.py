"""Candidate <-> pixels codec.

A candidate is a flat float vector of ``k`` tuples ``(x, y, c_1 .. c_C)``: column,
row and colour. Decoding floors to integers, so every candidate is a real image:
coordinates in ``[0, W) x [0, H)`` and colours in ``0..255``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


def genes_per_pixel(channels: int) -> int:
    return 2 + channels


@dataclasses.dataclass(frozen=True)
class PixelSpace:
    """The search space of k pixels on an ``H x W x C`` image (what a strategy searches).

    A candidate is ``dims = k * (2 + C)`` float genes; see the module docstring.
    """

    pixels: int
    height: int
    width: int
    channels: int

    @property
    def dims(self) -> int:
        return self.pixels * genes_per_pixel(self.channels)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return bounds(self.pixels, self.height, self.width, self.channels)

    def initial(self, key: jax.Array, size: int) -> jax.Array:
        """The paper's initial population ``[size, dims]``."""
        return initial_population(key, size, self.pixels, self.height, self.width,
                                  self.channels)

    def decode(self, genes):
        return decode(genes, self.pixels, self.height, self.width, self.channels)


def bounds(pixels: int, height: int, width: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Search box ``[lower, upper)`` per gene, each ``[pixels * (2 + C)]`` float32."""
    hi = np.array([width, height] + [256] * channels, np.float32)
    return np.zeros(pixels * hi.size, np.float32), np.tile(hi, pixels)


def initial_population(key: jax.Array, size: int, pixels: int, height: int, width: int,
                       channels: int) -> jax.Array:
    """The paper's start: coordinates uniform, colours N(128, 127) clipped to the box."""
    k_xy, k_c = jax.random.split(key)
    xy = jax.random.uniform(k_xy, (size, pixels, 2)) * jnp.array([width, height], jnp.float32)
    colour = 128.0 + 127.0 * jax.random.normal(k_c, (size, pixels, channels))
    colour = jnp.clip(colour, 0.0, 255.0)
    return jnp.concatenate([xy, colour], axis=-1).reshape(size, -1)


def decode(genes, pixels: int, height: int, width: int, channels: int):
    """Float genes ``[..., k * (2 + C)]`` -> int32 pixels ``[..., k, 2 + C]`` (x, y, colour).

    Works on jax and numpy arrays alike (the result has the input's array type).
    """
    xp = jnp if isinstance(genes, jax.Array) else np
    g = xp.floor(genes.reshape(*genes.shape[:-1], pixels, 2 + channels))
    hi = xp.asarray([width - 1, height - 1] + [255] * channels, dtype=g.dtype)
    return xp.clip(g, 0, hi).astype(xp.int32)


def paint(image: jax.Array, pixels: jax.Array) -> jax.Array:
    """Set ``k`` pixels of one uint8 ``[H, W, C]`` image; a later pixel wins on a clash.

    Uses a select per pixel rather than a scatter: deterministic, and it fuses into
    the model's first op.
    """
    h, w, _ = image.shape
    rows = jnp.arange(h, dtype=jnp.int32)[:, None]
    cols = jnp.arange(w, dtype=jnp.int32)[None, :]
    for j in range(pixels.shape[0]):
        hit = (rows == pixels[j, 1]) & (cols == pixels[j, 0])
        image = jnp.where(hit[..., None], pixels[j, 2:].astype(jnp.uint8), image)
    return image


def paint_numpy(images: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Reference painter on the host: ``[P, H, W, C]`` uint8 and ``[P, k, 2 + C]`` ints."""
    out = np.array(images, dtype=np.uint8, copy=True)
    idx = np.arange(out.shape[0])
    for j in range(pixels.shape[1]):
        out[idx, pixels[:, j, 1], pixels[:, j, 0]] = pixels[:, j, 2:].astype(np.uint8)
    return out
