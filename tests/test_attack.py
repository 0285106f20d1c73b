"""The attack on classifiers with known answers."""

import io

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jaxattack as ja
from jaxattack.classifier import PREDICT_CHUNK, predict
from tests import toys

SMALL = ja.AttackConfig(population=100, generations=60)


@pytest.fixture(scope="module")
def planted():
    return toys.planted()


@pytest.fixture(scope="module")
def images():
    return toys.random_images(6)


def constant(fooled: bool, num_classes=3):
    """Fooled by any change (or by none): a known answer for queries and generations."""

    def apply_fn(params, x):
        d = jnp.abs(x.astype(jnp.float32) - params["ref"]).sum((1, 2, 3))
        fool = (d > 0) if fooled else jnp.zeros_like(d, bool)
        return jnp.where(fool[:, None], jnp.eye(num_classes)[1], jnp.eye(num_classes)[0])

    return lambda ref: ja.Classifier(apply_fn, {"ref": jnp.asarray(ref, jnp.float32)},
                                     num_classes)


def test_finds_the_planted_pixel_untargeted(planted, images):
    r = ja.attack(planted, images, np.zeros(6, int), SMALL)
    assert r.success.all() and r.search_success.all() and r.clean_correct.all()
    np.testing.assert_array_equal(r.pixels[:, 0, :2], [[toys.PLANTED_X, toys.PLANTED_Y]] * 6)
    assert (r.predicted_after != 0).all()
    # Only the planted pixel changed, to a colour that flips the class.
    changed = (r.adversarial != images).any(-1)
    assert (changed.sum((1, 2)) <= 1).all()


def test_finds_the_planted_pixel_targeted(planted, images):
    r = ja.attack(planted, images, np.zeros(6, int), SMALL.replace(mode="targeted"),
                  targets=np.full(6, 2))
    assert r.success.all()
    assert (r.predicted_after == 2).all() and (r.adv_class == 2).all()
    px = r.pixels[:, 0]
    assert (px[:, 0] == toys.PLANTED_X).all() and (px[:, 1] == toys.PLANTED_Y).all()
    assert (px[:, 4] > 200).all() and (px[:, 2] < 60).all()  # blue high, red low
    assert (r.prob_adv_after > r.prob_adv_before).all()
    assert (r.prob_adv_after > 0.5).all()


def test_query_count_is_population_times_generations_plus_initial(planted, images):
    r = ja.attack(planted, images, np.zeros(6, int), SMALL)
    np.testing.assert_array_equal(r.queries, SMALL.population * (r.generations + 1))
    assert (r.generations < SMALL.generations).all()  # early stop happened


def test_known_answers_for_queries():
    imgs = toys.random_images(4)
    cfg = ja.AttackConfig(population=12, generations=7)
    always = ja.attack(constant(True)(imgs[0]), imgs[:1], [0], cfg)
    assert always.success.all() and (always.generations == 0).all()
    assert (always.queries == 12).all()
    never = ja.attack(constant(False)(imgs[0]), imgs, np.zeros(4, int), cfg)
    assert not never.success.any() and not never.search_success.any()
    assert (never.generations == 7).all() and (never.queries == 12 * 8).all()


def test_early_stop_none_spends_the_whole_budget(planted, images):
    r = ja.attack(planted, images[:2], [0, 0], SMALL.replace(early_stop="none"))
    assert (r.generations == SMALL.generations).all()
    assert (r.queries == SMALL.max_queries).all()
    assert r.success.all()  # the best successful candidate is still reported
    # The first success is remembered although the search ran on: same problems, same
    # keys, so it is exactly where the default early stop ends them.
    first = ja.attack(planted, images[:2], [0, 0], SMALL)
    np.testing.assert_array_equal(r.queries_to_hit, first.queries)
    np.testing.assert_array_equal(first.queries_to_hit, first.queries)
    assert (r.queries_to_hit < r.queries).all()


def test_paper_early_stop_reaches_the_threshold(planted, images):
    cfg = ja.AttackConfig.paper(population=100, generations=80, mode="targeted")
    r = ja.attack(planted, images, np.zeros(6, int), cfg, targets=np.full(6, 1))
    assert cfg.early_stop == "paper" and r.success.all()
    assert (r.prob_adv_after > 0.5).all()


def test_all_targets_mode_rows_and_statistics(planted, images):
    r = ja.attack(planted, images, np.zeros(6, int), SMALL.replace(mode="all-targets"))
    np.testing.assert_array_equal(r.image_index, np.repeat(np.arange(6), 2))
    np.testing.assert_array_equal(r.target, np.tile([1, 2], 6))
    assert r.success.all()
    idx, reached, ok = r.per_image()
    np.testing.assert_array_equal(reached, [2] * 6)
    assert r.fooled_any_rate() == 1.0
    pairs = r.class_pair_counts()
    np.testing.assert_array_equal(pairs, [[0, 6, 6], [0, 0, 0], [0, 0, 0]])
    s = r.summary()
    assert s["mean_classes_reached"] == 2.0 and s["problems"] == 12


def test_result_shapes_and_dtypes(planted, images):
    r = ja.attack(planted, images, np.zeros(6, int), SMALL.replace(pixels=3))
    assert len(r) == 6
    assert r.adversarial.shape == (6, 8, 8, 3) and r.adversarial.dtype == np.uint8
    assert r.pixels.shape == (6, 3, 5) and r.pixels.dtype == np.int32
    for f in ("success", "search_success", "clean_correct"):
        assert getattr(r, f).dtype == bool and getattr(r, f).shape == (6,)
    for f in ("generations", "queries", "label", "target", "adv_class"):
        assert getattr(r, f).shape == (6,) and getattr(r, f).dtype.kind == "i"
    assert (r.target == -1).all()


@pytest.mark.slow
def test_any_image_size_channels_and_class_count():
    clf = toys.small_cnn(num_classes=5, channels=1)
    x = toys.random_images(3, h=11, w=6, c=1)
    y = predict(clf, x).argmax(-1)
    r = ja.attack(clf, x, y, ja.AttackConfig(pixels=2, population=10, generations=3,
                                             mode="all-targets"))
    assert len(r) == 12 and r.pixels.shape == (12, 2, 3)
    assert (r.pixels[..., 0] < 6).all() and (r.pixels[..., 1] < 11).all()


@pytest.mark.slow
def test_same_result_alone_in_a_batch_or_elsewhere_in_it():
    clf = toys.small_cnn()
    x = toys.random_images(24, 12, 12)
    y = predict(clf, x).argmax(-1)
    cfg = ja.AttackConfig(population=16, generations=6)
    batch = ja.attack(clf, x, y, cfg)
    alone = ja.attack(clf, x[9:10], y[9:10], cfg, image_ids=[9])
    perm = np.random.default_rng(0).permutation(24)
    moved = ja.attack(clf, x[perm], y[perm], cfg, image_ids=perm, devices=2)
    fields = ("pixels", "generations", "queries", "success", "prob_true_after")
    for f in fields:
        np.testing.assert_array_equal(getattr(alone, f)[0], getattr(batch, f)[9])
        np.testing.assert_array_equal(getattr(moved, f)[np.argsort(perm)], getattr(batch, f))
    other_seed = ja.attack(clf, x, y, cfg.replace(seed=1))
    assert not np.array_equal(other_seed.pixels, batch.pixels)


def test_adversarial_png_round_trip_keeps_the_success(planted, images):
    r = ja.attack(planted, images, np.zeros(6, int), SMALL)
    reloaded = []
    for adv in r.adversarial:
        buf = io.BytesIO()
        Image.fromarray(adv).save(buf, format="PNG")
        reloaded.append(np.asarray(Image.open(io.BytesIO(buf.getvalue()))))
    p = predict(planted, np.stack(reloaded))
    assert (p.argmax(-1) != 0).all()
    np.testing.assert_array_equal(np.stack(reloaded), r.adversarial)


def test_a_success_that_does_not_survive_verification_is_not_reported():
    """A model that behaves differently in the verification batch: search sees success."""
    planted = toys.planted()

    def apply_fn(params, x):
        logits = planted.apply_fn(params, x)
        if x.shape[0] == PREDICT_CHUNK:  # the verification pass
            return jnp.broadcast_to(jnp.array([5.0, 0, 0]), logits.shape)
        return logits

    shifty = ja.Classifier.from_logits(apply_fn, planted.params, 3)
    r = ja.attack(shifty, toys.random_images(3), [0, 0, 0], SMALL)
    assert r.search_success.all() and not r.success.any()
    assert r.summary()["search_not_verified"] == 3


@pytest.mark.slow
def test_continuous_batching_equals_fixed_batches_and_wastes_less():
    from jaxattack import engine
    from jaxattack.engine.sharding import make_mesh
    from jaxattack.pixels import problems
    from jaxattack.pixels.verify import Collector

    clf = toys.small_cnn()
    x = toys.random_images(24, 10, 10)
    y = predict(clf, x).argmax(-1).astype(np.int32)
    cfg = ja.AttackConfig(population=12, generations=12)
    tgt = np.full(24, -1, np.int32)
    keys = problems.keys(0, np.arange(24), tgt)
    search = cfg.search(clf, x.shape[1:])
    runs = {}
    for refill in (False, True):
        out = Collector(24, 5)
        stats = engine.run(search, clf.params, keys,
                           problems.image_problems(x, y, np.arange(24), tgt), out,
                           mesh=make_mesh(2), num_slots=4, refill=refill)
        runs[refill] = out, stats.utilisation
    (fixed, u_fixed), (cont, u_cont) = runs[False], runs[True]
    np.testing.assert_array_equal(fixed.genes, cont.genes)
    np.testing.assert_array_equal(fixed.generations, cont.generations)
    assert len(set(cont.generations.tolist())) > 1  # problems finish at different times
    assert u_cont > u_fixed
    assert 0 < u_fixed < 1 and u_cont <= 1


@pytest.mark.slow
def test_clear_caches_forgets_compiled_programs_and_classifiers():
    import gc
    import weakref

    from jaxattack import engine
    from jaxattack.classifier import _jitted_probs

    clf = toys.planted()
    ja.attack(clf, toys.random_images(2), [0, 0], ja.AttackConfig(population=8, generations=1))
    assert engine._programs.cache_info().currsize and _jitted_probs.cache_info().currsize
    ref = weakref.ref(clf)
    del clf
    gc.collect()
    assert ref() is not None  # the caches keep the model alive ...
    ja.clear_caches()
    gc.collect()
    assert ref() is None  # ... until they are cleared
    assert engine._programs.cache_info().currsize == 0
