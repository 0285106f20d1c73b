"""The DE core against its definition and against scipy's differential_evolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats

from jaxattack.strategies import de


def test_sample_indices_shape_distinct_and_not_self():
    r = np.asarray(de.sample_indices(jax.random.PRNGKey(0), 50))
    assert r.shape == (50, 3) and r.dtype == np.int32
    i = np.arange(50)[:, None]
    trip = np.concatenate([i, r], 1)
    assert all(len(set(t)) == 4 for t in trip.tolist())
    assert r.min() >= 0 and r.max() < 50


@pytest.mark.parametrize("size", [4, 7])
def test_sample_indices_uniform_over_ordered_triples(size):
    keys = jax.random.split(jax.random.PRNGKey(1), 6000)
    r = np.asarray(jax.vmap(lambda k: de.sample_indices(k, size))(keys))  # [K, size, 3]
    for i in (0, size - 1):
        codes = (r[:, i, 0] * size + r[:, i, 1]) * size + r[:, i, 2]
        _, counts = np.unique(codes, return_counts=True)
        allowed = (size - 1) * (size - 2) * (size - 3)
        assert counts.size == allowed  # every ordered triple of others appears
        assert stats.chisquare(counts).pvalue > 1e-3


def test_sample_indices_rejects_small_population():
    with pytest.raises(ValueError, match="at least 4"):
        de.sample_indices(jax.random.PRNGKey(0), 3)


def test_redraw_replaces_only_out_of_bounds_genes_inside_the_box():
    lo, hi = jnp.zeros(2), jnp.array([1.0, 10.0])
    x = jnp.array([[0.5, 11.0], [-0.1, 5.0], [1.0, 0.0]] * 100)
    y = np.asarray(de.redraw_out_of_bounds(jax.random.PRNGKey(0), x, lo, hi))
    np.testing.assert_array_equal(y[0::3, 0], 0.5)
    np.testing.assert_array_equal(y[2::3], [[1.0, 0.0]] * 100)
    redrawn = np.concatenate([y[0::3, 1] / 10, y[1::3, 0]])
    assert ((redrawn >= 0) & (redrawn <= 1)).all()
    assert stats.kstest(redrawn, "uniform").pvalue > 1e-3  # uniform, not clipped to the edge


def test_tell_is_strictly_greedy():
    s = de.init(jnp.zeros((3, 1)), jnp.array([1.0, 1.0, 1.0]))
    out = de.tell(s, jnp.ones((3, 1)), jnp.array([0.5, 1.0, 2.0]))
    np.testing.assert_array_equal(out.population[:, 0], [1.0, 0.0, 0.0])  # tie keeps parent
    np.testing.assert_array_equal(out.fitness, [0.5, 1.0, 1.0])


def test_ask_is_rand1_without_crossover():
    pop = jnp.arange(20.0).reshape(10, 2)
    key = jax.random.PRNGKey(3)
    trial = de.ask(key, de.init(pop, jnp.zeros(10)), jnp.full(2, -1e9), jnp.full(2, 1e9))
    k_idx = jax.random.split(key, 3)[0]
    r = de.sample_indices(k_idx, 10)
    np.testing.assert_allclose(trial, pop[r[:, 0]] + 0.5 * (pop[r[:, 1]] - pop[r[:, 2]]))


def test_binomial_crossover_rate_and_forced_gene():
    n, d = 4000, 5
    out = np.asarray(de.binomial_crossover(jax.random.PRNGKey(0), jnp.zeros((n, d)),
                                           jnp.ones((n, d)), 0.3))
    assert (out.sum(1) >= 1).all()  # at least one gene from the mutant
    expected = 0.3 + 0.7 / d  # forced gene plus the rate elsewhere
    assert abs(out.mean() - expected) < 0.01


def sphere(x):  # x [..., D]
    return (x ** 2).sum(-1)


def rastrigin(x):
    xp = jnp if isinstance(x, jax.Array) else np
    return 10 * x.shape[-1] + (x ** 2 - 10 * xp.cos(2 * np.pi * x)).sum(-1)


def _ours(fn, dim, pop, gens, runs, F=0.5):
    lo, hi = -5.12 * jnp.ones(dim), 5.12 * jnp.ones(dim)
    keys = jax.random.split(jax.random.PRNGKey(42), runs)
    run = jax.jit(jax.vmap(lambda k: de.minimize(k, lambda x: fn(x), lo, hi, pop, gens,
                                                 de.DEParams(F=F)).fitness.min()))
    return np.asarray(run(keys))


def _scipy(fn, dim, pop, gens, runs):
    out = []
    for seed in range(runs):
        res = optimize.differential_evolution(
            lambda x: fn(x.T), [(-5.12, 5.12)] * dim, strategy="rand1bin", mutation=0.5,
            recombination=1.0, popsize=pop // dim, maxiter=gens, tol=0, atol=0,
            polish=False, init="random", updating="deferred", vectorized=True, rng=seed)
        out.append(res.fun)
    return np.asarray(out)


@pytest.mark.parametrize("fn,dim,gens", [(sphere, 4, 25),
                                         pytest.param(rastrigin, 3, 30, marks=pytest.mark.slow)])
def test_matches_scipy_final_fitness_distribution(fn, dim, gens):
    pop, runs = 8 * dim, 150
    ref = _scipy(fn, dim, pop, gens, runs)
    ours = _ours(fn, dim, pop, gens, 600)
    assert stats.ks_2samp(np.log(ours + 1e-12), np.log(ref + 1e-12)).pvalue > 1e-3
    # The same check has power: a different F is told apart.
    other = _ours(fn, dim, pop, gens, 600, F=0.9)
    assert stats.ks_2samp(np.log(other + 1e-12), np.log(ref + 1e-12)).pvalue < 1e-3
