"""Sharding problems over devices changes nothing but speed."""

import jax
import numpy as np
import pytest

import jaxattack as ja
from jaxattack.classifier import predict
from tests import toys


@pytest.fixture(scope="module")
def setup():
    clf = toys.small_cnn()
    x = toys.random_images(13, 10, 10)  # not a multiple of the device count
    return clf, x, predict(clf, x).argmax(-1)


def test_eight_virtual_devices_are_configured():
    assert len(jax.devices()) == 8


@pytest.mark.slow
def test_one_two_and_eight_devices_give_identical_results(setup):
    clf, x, y = setup
    cfg = ja.AttackConfig(population=12, generations=5, mode="all-targets")
    runs = [ja.attack(clf, x, y, cfg, devices=n) for n in (1, 2, 8)]
    for r in runs[1:]:
        for f in ("pixels", "generations", "queries", "success", "adversarial",
                  "prob_adv_after", "image_index", "target"):
            np.testing.assert_array_equal(getattr(r, f), getattr(runs[0], f), err_msg=f)
        assert r.summary() | {"seconds": 0} == runs[0].summary() | {"seconds": 0}
    assert len(runs[0]) == 13 * 9  # padding never shows up
