"""Bad input gets a clear error naming the problem, before any JAX work."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxattack as ja
from tests import toys

CFG = ja.AttackConfig(population=8, generations=2)


@pytest.fixture(scope="module")
def clf():
    return toys.planted()


@pytest.fixture(scope="module")
def x():
    return toys.random_images(2)


@pytest.mark.parametrize("images,err,match", [
    (np.zeros((8, 8, 3), np.uint8), ValueError, r"images\[None\]"),
    (np.zeros((2, 8, 8), np.uint8), ValueError, "shape"),
    (np.zeros((0, 8, 8, 3), np.uint8), ValueError, "empty"),
    (np.zeros((2, 8, 8, 3), np.float32), TypeError, "uint8"),
    (np.full((2, 8, 8, 3), 300, np.int32), ValueError, "0..255"),
    (np.full((2, 8, 8, 3), -1, np.int64), ValueError, "0..255"),
    (np.zeros((2, 9, 8, 3), np.uint8), ValueError, "expects 8x8x3"),
])
def test_bad_images(clf, images, err, match):
    with pytest.raises(err, match=match):
        ja.attack(clf, images, [0, 0], CFG)


def test_integer_images_in_range_are_accepted(clf, x):
    r = ja.attack(clf, x.astype(np.int64), [0, 0], CFG)
    assert r.adversarial.dtype == np.uint8


@pytest.mark.parametrize("labels,err,match", [
    ([0], ValueError, r"shape \(2,\)"),
    ([0, 3], ValueError, r"\[0, 3\)"),
    ([0, -1], ValueError, r"\[0, 3\)"),
    ([0.0, 1.0], TypeError, "integers"),
])
def test_bad_labels(clf, x, labels, err, match):
    with pytest.raises(err, match=match):
        ja.attack(clf, x, labels, CFG)


@pytest.mark.parametrize("kw,err,match", [
    (dict(pixels=0), ValueError, "pixels must be >= 1"),
    (dict(pixels=1.5), TypeError, "pixels must be an int"),
    (dict(population=3), ValueError, "population must be >= 4"),
    (dict(generations=-1), ValueError, "generations"),
    (dict(mode="sideways"), ValueError, "mode must be one of"),
    (dict(F=0.0), ValueError, "F must"),
    (dict(crossover=1.5), ValueError, "crossover"),
    (dict(early_stop="soon"), ValueError, "early_stop"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(batch_size=0), ValueError, "batch_size"),
])
def test_bad_config(kw, err, match):
    with pytest.raises(err, match=match):
        ja.AttackConfig(**kw)


def test_too_many_pixels(clf, x):
    with pytest.raises(ValueError, match="exceeds the 64 pixels"):
        ja.attack(clf, x, [0, 0], CFG.replace(pixels=65))


@pytest.mark.parametrize("mode,targets,match", [
    ("targeted", None, "needs targets"),
    ("targeted", [1, 0], "target equals the label"),
    ("targeted", [1, 3], r"targets must lie in \[0, 3\)"),
    ("targeted", [1], r"targets must have shape"),
    ("untargeted", [1, 1], "mode='targeted'"),
    ("all-targets", [1, 1], "do not pass targets"),
])
def test_bad_targets(clf, x, mode, targets, match):
    with pytest.raises(ValueError, match=match):
        ja.attack(clf, x, [0, 0], CFG.replace(mode=mode), targets=targets)


def test_logits_passed_as_probabilities_suggests_from_logits(clf, x):
    as_probs = ja.Classifier(clf.apply_fn, clf.params, 3)
    with pytest.raises(ValueError, match="from_logits"):
        ja.attack(as_probs, x, [0, 0], CFG)


def test_nan_probabilities(x):
    nan = ja.Classifier(lambda p, im: jnp.full((im.shape[0], 3), jnp.nan), {}, 3)
    with pytest.raises(ValueError, match="NaN"):
        ja.attack(nan, x, [0, 0], CFG)


def test_wrong_output_shape(x):
    bad = ja.Classifier(lambda p, im: jnp.full((im.shape[0], 4), 0.25), {}, 3)
    with pytest.raises(ValueError, match="expected"):
        ja.attack(bad, x, [0, 0], CFG)


@pytest.mark.parametrize("ids,match", [([0, 0], "unique"), ([0, -1], r"\[0, 2\*\*32\)"),
                                       ([0], "2 integers")])
def test_bad_image_ids(clf, x, ids, match):
    with pytest.raises(ValueError, match=match):
        ja.attack(clf, x, [0, 0], CFG, image_ids=ids)


def test_bad_classifier_and_config_types(clf, x):
    with pytest.raises(TypeError, match="jaxattack.Classifier"):
        ja.attack(lambda im: im, x, [0, 0], CFG)
    with pytest.raises(TypeError, match="AttackConfig"):
        ja.attack(clf, x, [0, 0], {"pixels": 1})
    with pytest.raises(ValueError, match="num_classes"):
        ja.Classifier(clf.apply_fn, {}, 1)
    with pytest.raises(ValueError, match="outputs"):
        ja.Classifier(clf.apply_fn, {}, 3, outputs="scores")


def test_devices_argument(clf, x):
    with pytest.raises(ValueError, match="local devices"):
        ja.attack(clf, x, [0, 0], CFG, devices=999)
