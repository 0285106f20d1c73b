"""The Flax -> PyTorch port used by benchmarks/peers.py (skipped without torch)."""

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from jaxattack import models  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
torch_port = pytest.importorskip("torch_port")


def _randomised_tiny(seed=0):
    """``tiny`` with random BatchNorm statistics/affine, so the BN port is exercised."""
    module = models.build("tiny", 10, seed)
    rng = np.random.default_rng(seed)
    for _, bn in nnx.iter_graph(module):
        if isinstance(bn, nnx.BatchNorm):
            c = bn.mean.get_value().shape
            bn.mean.set_value(jnp.asarray(rng.normal(0, 0.5, c), jnp.float32))
            bn.var.set_value(jnp.asarray(rng.uniform(0.2, 3.0, c), jnp.float32))
            bn.scale.set_value(jnp.asarray(rng.uniform(0.5, 1.5, c), jnp.float32))
            bn.bias.set_value(jnp.asarray(rng.normal(0, 0.3, c), jnp.float32))
    return models.from_module(module, 10)


def test_tiny_port_matches_flax():
    clf = _randomised_tiny()
    x = np.random.default_rng(1).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    want = np.asarray(jax.jit(clf.apply_fn)(clf.params, jnp.asarray(x)))
    net = torch_port.port_tiny(clf.params)
    assert not net.training
    with torch.no_grad():
        got = net(torch_port.to_nchw_float(x)).numpy()
        got01 = torch_port.port_tiny(clf.params, scale=255)(
            torch_port.to_nchw_float(x, 255)).numpy()
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(got01 - want).max() < 1e-4
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


@pytest.mark.parametrize("size,stride", [(32, 2), (31, 2), (8, 1), (7, 3)])
def test_same_padding_matches_flax_conv(size, stride):
    conv = nnx.Conv(3, 4, (3, 3), strides=stride, padding="SAME", use_bias=False,
                    rngs=nnx.Rngs(0))
    x = np.random.default_rng(2).normal(size=(2, size, size, 3)).astype(np.float32)
    want = np.asarray(conv(jnp.asarray(x)))
    mod = torch_port.ConvBN(3, 4, stride=stride, relu=False).eval()
    with torch.no_grad():
        mod.conv.weight.copy_(torch.from_numpy(
            np.array(np.transpose(np.asarray(conv.kernel.get_value()), (3, 2, 0, 1)))))
        got = mod(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    # BatchNorm at init (mean 0, var 1, eps 1e-5) only rescales by 1/sqrt(1 + 1e-5).
    np.testing.assert_allclose(got.transpose(0, 2, 3, 1) * np.sqrt(1 + 1e-5), want,
                               atol=1e-5, rtol=1e-5)


def test_same_padding_is_asymmetric_for_stride_two():
    assert torch_port.same_padding(32, 3, 2) == (0, 1)
    assert torch_port.same_padding(32, 3, 1) == (1, 1)
