"""Every strategy on the planted pixel and on a problem with a known optimum."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxattack as ja
from jaxattack import strategies
from jaxattack.pixels import objective
from jaxattack.strategies import codec
from jaxattack.strategies.codec import PixelSpace
from jaxattack.strategies.learned_rs import sample_positions
from jaxattack.strategies.sparse_rs import _ranks, resample_fraction
from tests import toys


@pytest.mark.parametrize("name,loss", toys.fast_only(
    [(n, "prob") for n in strategies.NAMES] + [("de", "margin"), ("sparse-rs", "margin")],
    {("de", "prob"), ("sparse-rs", "margin"), ("learned-rs", "prob"), ("oracle", "prob")}))
def test_finds_the_planted_pixel(name, loss):
    cfg = ja.AttackConfig(population=100, generations=60, strategy=name, loss=loss)
    r = ja.attack(toys.planted(), toys.random_images(4), np.zeros(4, int), cfg)
    assert r.success.all(), name
    np.testing.assert_array_equal(r.pixels[:, 0, :2], [[toys.PLANTED_X, toys.PLANTED_Y]] * 4)
    np.testing.assert_array_equal(r.queries, 100 * (r.generations + 1))


def _run(strategy, fitness_fn, key):
    """The engine's loop for one problem, without images."""
    state = strategy.init(key)

    def body(g, state):
        cands, pending = strategy.ask(jax.random.fold_in(key, g), state, g)
        return strategy.tell(state, cands, pending, fitness_fn(cands), g)

    state = jax.lax.fori_loop(0, strategy.generations + 1, body, state)
    return fitness_fn(strategy.best(state)[None])[0]


@pytest.mark.parametrize("name", toys.fast_only(strategies.NAMES, {"de", "sparse-rs", "oracle"}))
def test_reaches_a_known_optimum(name):
    """Minimise the distance of the decoded pixel to a goal pixel (optimum 0): every run
    lands on the goal position, and the typical run on its colour within a few levels."""
    strategy = strategies.build(name, PixelSpace(1, 8, 8, 3), population=40, generations=60)
    goal = np.array([1, 6, 255, 0, 255], np.float32)

    def fitness(cands):
        d = jnp.abs(codec.decode(cands, 1, 8, 8, 3)[:, 0].astype(jnp.float32) - goal)
        return d[:, :2].sum(-1) + d[:, 2:].sum(-1) / 255.0

    keys = jax.random.split(jax.random.PRNGKey(0), 16)
    best = np.asarray(jax.jit(jax.vmap(functools.partial(_run, strategy, fitness)))(keys))
    assert (best < 1).all(), (name, best)  # the right position in every run
    assert np.median(best) < 0.03, (name, best)  # colour within 8 levels in most


def test_sparse_rs_schedule_known_values():
    f = [float(resample_fraction(0.3, jnp.float32(u), 10000)) for u in
         (0, 10, 11, 50, 51, 200, 201, 1000, 1001, 8000, 8001, 9999)]
    np.testing.assert_allclose(f, [0.3, 0.3, 0.15, 0.15, 0.075, 0.075, 0.06, 0.05, 0.0375,
                                   0.02, 0.015, 0.015], rtol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10])
def test_sparse_rs_ranks_equal_a_double_stable_argsort(k):
    """The resampled pixels are picked by rank; the comparison ranks must be the double
    stable argsort's, ties (in index order) included, so the searches do not change."""
    u = jax.random.uniform(jax.random.key(k), (2000, k))
    u = jnp.round(u * 3) / 3  # many ties
    np.testing.assert_array_equal(_ranks(u), jnp.argsort(jnp.argsort(u, axis=-1,
                                                                       stable=True), -1))


def test_learned_rs_positions_follow_the_softmax_of_the_logits():
    """Inverse-CDF draws against the known distribution (chi-square), the clipped
    logits' extremes included, and against ``jax.random.categorical``'s frequencies."""
    from scipy import stats
    logits = jnp.array([8.0, -8.0, 0.0, 1.0, 2.0, -1.0, 3.0, 0.5] * 4)
    p = np.asarray(jax.nn.softmax(logits), np.float64)
    p /= p.sum()
    n = 400_000
    pos = np.asarray(sample_positions(jax.random.key(0), logits, (n // 40, 40)))
    assert pos.dtype == np.int32 and pos.min() >= 0 and pos.max() < logits.shape[0]
    counts = np.bincount(pos.ravel(), minlength=logits.shape[0])
    big = p * n >= 5  # chi-square over the positions expected 5+ times, the rest pooled
    obs = np.r_[counts[big], counts[~big].sum()]
    exp = np.r_[p[big], p[~big].sum()] * n
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    ref = np.bincount(np.asarray(jax.random.categorical(jax.random.key(1), logits, shape=(n,))),
                      minlength=logits.shape[0])
    table = np.stack([counts, ref])[:, counts + ref > 0]
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_margin_loss_known_values():
    p = jnp.array([[0.5, 0.3, 0.2], [0.2, 0.7, 0.1]])
    lab, untargeted, tgt = jnp.array([0, 0]), jnp.array([-1, -1]), jnp.array([2, 2])
    np.testing.assert_allclose(objective.fitness(p, lab, untargeted, "margin"), [0.2, -0.5],
                               rtol=1e-6)
    np.testing.assert_allclose(objective.fitness(p, lab, tgt, "margin"), [0.3, 0.6], rtol=1e-6)
    np.testing.assert_allclose(objective.fitness(p, lab, tgt, "prob"), [-0.2, -0.1])
    with pytest.raises(ValueError, match="loss"):
        objective.fitness(p, lab, tgt, "hinge")


def test_jde_parameters_stay_in_range_and_adapt():
    jde = strategies.build("jde", PixelSpace(1, 8, 8, 3), population=30, generations=20)
    state = jde.init(jax.random.PRNGKey(0))
    fit = lambda c: (c ** 2).sum(-1)  # noqa: E731
    for g in range(20):
        cands, pending = jde.ask(jax.random.PRNGKey(g), state, g)
        state = jde.tell(state, cands, pending, fit(cands), g)
    F, CR = np.asarray(state.F), np.asarray(state.CR)
    assert ((F >= 0.1) & (F <= 1.0)).all() and ((CR >= 0) & (CR <= 1)).all()
    assert (F != 0.5).any() and (CR != 0.9).any()


def test_unknown_strategy_and_loss():
    with pytest.raises(ValueError, match="strategy must be one of"):
        ja.AttackConfig(strategy="pso")
    with pytest.raises(ValueError, match="loss must be one of"):
        ja.AttackConfig(loss="hinge")


@pytest.mark.parametrize("name", strategies.NAMES)
def test_registry_entry_is_a_complete_strategy(name):
    """Every registered strategy: its name, typed params with defaults and help, its own
    minimum population, and a state of fixed shapes from init to tell."""
    cls = strategies.get(name)
    assert cls.name == name and issubclass(cls, strategies.Strategy)
    for f in strategies.param_fields(name):
        assert f.default is not dataclasses.MISSING and f.metadata["help"], (name, f.name)
    with pytest.raises(ValueError, match=f"population must be >= {cls.min_population}"):
        ja.AttackConfig(strategy=name, population=cls.min_population - 1)
    s = strategies.build(name, PixelSpace(2, 6, 5, 3), cls.min_population, 4)
    state = s.init(jax.random.PRNGKey(0))
    for g in range(3):
        cands, pending = s.ask(jax.random.PRNGKey(g), state, g)
        assert cands.shape == (cls.min_population, 10) and cands.dtype == jnp.float32
        new = s.tell(state, cands, pending, (cands ** 2).sum(-1), g)
        assert jax.tree.map(jnp.shape, new) == jax.tree.map(jnp.shape, state)
        state = new
    assert s.best(state).shape == (10,)


def test_strategy_params_reach_the_strategy_and_are_checked():
    cfg = ja.AttackConfig(strategy="jde", strategy_params={"tau": 0.25})
    assert cfg.strategy_params == (("tau", 0.25),)
    search = cfg.search(toys.planted(), (8, 8, 3))
    assert search.strategy.params.tau == 0.25 and search.strategy.params.F_low == 0.1
    de = ja.AttackConfig(F=0.7, crossover=0.3).search(toys.planted(), (8, 8, 3)).strategy
    assert (de.params.F, de.params.CR) == (0.7, 0.3)
    assert ja.AttackConfig(strategy="de-bin").search(
        toys.planted(), (8, 8, 3)).strategy.params.CR == 0.5
    with pytest.raises(ValueError, match="unknown parameter 'tua' for strategy 'jde'; its "
                                         "parameters are tau, F_low, F_high"):
        ja.AttackConfig(strategy="jde", strategy_params={"tua": 0.2})
    with pytest.raises(ValueError, match="tau must lie in"):
        ja.AttackConfig(strategy="jde", strategy_params={"tau": 2.0})
    with pytest.raises(ValueError, match="set F with AttackConfig"):
        ja.AttackConfig(strategy_params={"F": 0.7})
    with pytest.raises(ValueError, match="F does not apply to strategy 'sparse-rs'"):
        ja.AttackConfig(strategy="sparse-rs", F=0.9)
    # params change the experiment's identity only when given (old ids stay valid)
    assert "strategy_params" not in ja.AttackConfig().identity()
    assert cfg.identity()["strategy_params"] == {"tau": 0.25}


def test_minimum_k_on_a_model_that_needs_two_pixels():
    from jaxattack.runs.minimum_k import minimum_k

    def apply_fn(params, x):  # class 1 only if pixel (1, 2) is red AND (3, 0) is green
        x = x.astype(jnp.float32)
        both = jax.nn.sigmoid((x[:, 2, 1, 0] - 200) / 8) * jax.nn.sigmoid((x[:, 0, 3, 1] - 200) / 8)
        return jnp.stack([jnp.full_like(both, 3.0), 8 * both, jnp.zeros_like(both)], -1)

    clf = ja.Classifier.from_logits(apply_fn, {}, 3)
    x = np.zeros((3, 4, 4, 3), np.uint8)
    cfg = ja.AttackConfig(population=100, generations=60)
    r = minimum_k(clf, x, np.zeros(3, int), cfg, ks=(1, 2, 3))
    np.testing.assert_array_equal(r.min_k, [2, 2, 2])
    assert (r.queries > r.tries[0].queries).all() and len(r.tries) == 2
    assert (r.tries[0].queries == cfg.max_queries).all()  # k = 1 spent its whole budget
    capped = minimum_k(clf, x, np.zeros(3, int), cfg, ks=(1, 2, 3),
                       max_queries=cfg.max_queries)
    np.testing.assert_array_equal(capped.min_k, [-1, -1, -1])  # no budget for a second k
    with pytest.raises(ValueError, match="increasing"):
        minimum_k(clf, x, np.zeros(3, int), cfg, ks=(2, 1))
    wrong = minimum_k(clf, x, np.array([0, 2, 0]), cfg, ks=(1, 2))  # image 1: misclassified
    np.testing.assert_array_equal(wrong.min_k, [2, 0, 2])
    assert wrong.queries[1] == 0 and wrong.success_rate() == 1.0
    assert wrong.success_rate(correct_only=False) == 1.0
    assert capped.success_rate() == 0.0
    # The checks attack() makes: a label the model cannot output is an error, not a
    # silent "already misclassified" (min_k = 0).
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        minimum_k(clf, x, np.array([0, 7, 0]), cfg, ks=(1,))
    with pytest.raises(ValueError, match="images is empty"):
        minimum_k(clf, x[:0], np.zeros(0, int), cfg, ks=(1,))
    with pytest.raises(ValueError, match="pixels=17 exceeds the 16 pixels"):
        minimum_k(clf, x, np.zeros(3, int), cfg, ks=(1, 17))
