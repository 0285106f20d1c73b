"""Candidate <-> pixels codec: real pixels, and the jax and numpy painters agree."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxattack.strategies import codec


def test_bounds_layout():
    lo, hi = codec.bounds(2, height=6, width=9, channels=3)
    assert lo.shape == hi.shape == (10,) and lo.dtype == np.float32
    np.testing.assert_array_equal(hi, [9, 6, 256, 256, 256] * 2)
    assert (lo == 0).all()


def test_initial_population_paper_distribution():
    pop = np.asarray(codec.initial_population(jax.random.PRNGKey(0), 20000, 1, 32, 24, 3))
    assert pop.shape == (20000, 5)
    x, y, c = pop[:, 0], pop[:, 1], pop[:, 2:]
    assert stats.kstest(x / 24, "uniform").pvalue > 1e-3
    assert stats.kstest(y / 32, "uniform").pvalue > 1e-3
    assert c.min() == 0 and c.max() == 255
    inside = c[(c > 0) & (c < 255)]
    # Truncated N(128, 127): the clipped mass at each end is P(z < -128/127) ~ 15.7%.
    assert abs((c == 0).mean() - stats.norm.cdf(-128 / 127)) < 0.01
    assert abs(inside.mean() - 128) < 2


def test_decode_floors_and_clips_to_real_pixels():
    g = np.array([[3.99, 0.0, 255.9, -1.0, 17.5, 8.0, 4.0, 300.0, 0.2, 1.0]], np.float32)
    px = codec.decode(g, pixels=2, height=4, width=8, channels=3)
    assert px.dtype == np.int32 and px.shape == (1, 2, 5)
    np.testing.assert_array_equal(px[0], [[3, 0, 255, 0, 17], [7, 3, 255, 0, 1]])
    np.testing.assert_array_equal(codec.decode(jnp.asarray(g), 2, 4, 8, 3), px)


def test_jax_and_numpy_painters_agree_later_pixel_wins():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (50, 5, 7, 3), dtype=np.uint8)
    px = np.stack([rng.integers(0, 7, (50, 4)), rng.integers(0, 5, (50, 4))], -1)
    px = np.concatenate([px, rng.integers(0, 256, (50, 4, 3))], -1).astype(np.int32)
    px[:, 3, :2] = px[:, 0, :2]  # a clash: the 4th pixel overwrites the 1st
    ours = np.asarray(jax.vmap(codec.paint)(jnp.asarray(imgs), jnp.asarray(px)))
    ref = codec.paint_numpy(imgs, px)
    np.testing.assert_array_equal(ours, ref)
    i = np.arange(50)
    np.testing.assert_array_equal(ref[i, px[:, 3, 1], px[:, 3, 0]], px[:, 3, 2:])
    changed = (ref != imgs).any(-1).sum((1, 2))
    assert (changed <= 3).all()  # at most 3 distinct positions
    assert ours.dtype == np.uint8
