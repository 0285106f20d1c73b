"""The fast convolution forms (``jaxattack.programs.convs``) against XLA's own convolution, and the
lowering that computes a model's convolutions in them (issue 33)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

import jaxattack as ja
from jaxattack import models
from jaxattack.programs import convs, jaxprs
from tests import toys

DN = ("NHWC", "HWIO", "NHWC")


def rand(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def xla(x, w, strides, padding, dilation=(1, 1), groups=1):
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=DN, feature_group_count=groups)


CASES = [  # (map, cin, cout, kernel, strides, padding, dilation, groups, form)
    (16, 24, 24, 3, (1, 1), ((1, 1), (1, 1)), (1, 1), 24, "depthwise"),
    (15, 16, 16, 5, (2, 2), ((1, 2), (2, 1)), (1, 1), 16, "depthwise"),
    (12, 8, 16, 3, (1, 1), ((2, 2), (2, 2)), (2, 2), 8, "depthwise"),  # multiplier 2
    (12, 16, 32, 3, (1, 2), ((1, 1), (0, 1)), (1, 1), 4, "grouped"),
    (9, 12, 18, 1, (1, 1), ((0, 0), (0, 0)), (1, 1), 1, "matmul"),
    (2, 20, 8, 3, (1, 1), ((1, 1), (1, 1)), (1, 1), 1, "im2col"),
    (4, 20, 8, 3, (2, 2), ((1, 1), (1, 1)), (1, 1), 1, "im2col"),  # a 2x2 output
    (8, 6, 8, 3, (1, 1), ((1, 1), (1, 1)), (1, 1), 1, "xla"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[-1] + str(i) for i, c in enumerate(CASES)])
def test_each_form_equals_xlas_convolution(case):
    size, cin, cout, k, strides, padding, dilation, groups, form = case
    x = rand((3, size, size, cin), 0)
    w = rand((k, k, cin // groups, cout), 1)
    assert convs.form(x.shape, w.shape, strides, padding, dilation, groups, "cpu") == form
    want = xla(x, w, strides, padding, dilation, groups)
    got = jax.jit(lambda x, w: convs.conv(x, w, strides, padding, dilation, groups,
                                          how=form))(x, w)
    assert got.shape == want.shape
    assert float(jnp.abs(got - want).max()) <= 1e-5 * float(jnp.abs(want).max())


def test_other_platforms_keep_xlas_convolution():
    assert convs.form((1, 16, 16, 8), (3, 3, 1, 8), (1, 1), ((1, 1), (1, 1)), groups=8,
                      platform="gpu") == "xla"


class GroupedNet(nnx.Module):
    """Grouped and depthwise convolutions, a 1x1 convolution, NNX defaults."""

    def __init__(self, rngs=None):
        rngs = rngs or nnx.Rngs(0)
        self.a = nnx.Conv(3, 16, (3, 3), strides=2, rngs=rngs)
        self.b = nnx.Conv(16, 16, (3, 3), feature_group_count=4, rngs=rngs)
        self.c = nnx.Conv(16, 16, (5, 5), feature_group_count=16, rngs=rngs)
        self.d = nnx.Conv(16, 8, (1, 1), rngs=rngs)
        self.head = nnx.Linear(8, 5, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.a(x.astype(jnp.float32) / 255))
        x = jax.nn.relu6(self.b(x))
        x = jax.nn.silu(self.c(x))
        return self.head(self.d(x).mean((1, 2)))


def test_a_model_is_lowered_and_gives_the_same_outputs():
    clf = models.from_module(GroupedNet(), 5, input_shape=(16, 16, 3), name="grouped")
    x = jnp.asarray(toys.random_images(4, 16, 16))
    prog = jaxprs.trace(clf.apply_fn, clf.params, x)
    assert convs.has_fast_convs(prog)
    forms = [convs._fast(prog.shape(e.ins[0]), prog.shape(e.ins[1]), e.params)
             for e in prog.eqns if e.name == "conv_general_dilated"]
    assert forms == ["xla", "grouped", "depthwise", "matmul"]
    lowered = jax.jit(clf.probs)(clf.params, x)  # Classifier.probs lowers by default
    plain = jax.jit(clf.replace(lower=False).probs)(clf.params, x)
    np.testing.assert_allclose(lowered, plain, atol=1e-6)
    # the lowered program has no grouped convolution left
    low = jax.make_jaxpr(convs.lowered(clf.apply_fn))(clf.params, x)
    text = str(low)
    assert "feature_group_count=4" not in text and "feature_group_count=16" not in text


def test_a_model_without_fast_forms_runs_its_own_program():
    clf = toys.small_cnn()
    x = jnp.asarray(toys.random_images(2, 8, 8))
    prog = jaxprs.trace(clf.apply_fn, clf.params, x)
    assert not convs.has_fast_convs(prog)
    a = jax.make_jaxpr(convs.lowered(clf.apply_fn))(clf.params, x)
    b = jax.make_jaxpr(clf.apply_fn)(clf.params, x)
    assert str(a) == str(b)


def test_nchw_dimension_numbers_are_lowered_too():
    x = rand((2, 12, 10, 10), 2)  # NCHW
    w = rand((12, 1, 3, 3), 3)  # OIHW, depthwise
    dn = ("NCHW", "OIHW", "NCHW")

    def f(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=dn, feature_group_count=12)

    want = f(x, w)
    got = jax.jit(convs.lowered(f))(x, w)
    assert float(jnp.abs(got - want).max()) <= 1e-5 * float(jnp.abs(want).max())


def test_the_vgg16_lowering_is_the_old_shifted_matmul():
    """vgg16's last block (2x2 maps) used to call a shifted-matmul convolution of its own;
    the lowering computes the same im2col: the same logits to float rounding."""
    clf = models.load("vgg16")
    x = ja.data.load("sample", limit=4)[0]
    got = np.asarray(jax.jit(clf.probs)(clf.params, jnp.asarray(x)))
    plain = np.asarray(jax.jit(clf.replace(lower=False).probs)(clf.params, jnp.asarray(x)))
    np.testing.assert_allclose(got, plain, atol=1e-5)
