"""The sparse forward on models nobody declared (issue 32): each importer's classifiers,
a PyTorch CNN of mixed block types through ONNX, an NNX module of unusual ops, and an
EfficientNet-Lite-shaped network at 224 x 224. Each must equal its dense forward
within 1e-5 at k = 1, 3 and 5 (corner, edge, adjacent and repeated pixels), at the
handover the cost model picks and at the deepest one it could.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402
from jax import lax  # noqa: E402

import jaxattack as ja  # noqa: E402
from jaxattack import data, models, sparse  # noqa: E402
from jaxattack.pixels import evaluation
from jaxattack.strategies import codec
from tests import toys  # noqa: E402
from tests.fixtures import make_fixtures as mf  # noqa: E402
from tests.test_sparse import assert_exact, candidates, init  # noqa: E402
from tests.toys import have, keras_on_jax  # noqa: E402

FIX = mf.HERE
CIFAR = dict(input_scale=1, mean="cifar10", std="cifar10")
KS = (1, 3, 5)


ROUTES = {
    "keras": (lambda: models.from_keras(FIX / "cnn.keras", input_scale=255), keras_on_jax(),
              'pip install "jaxattack[keras]"'),
    "saved_model": (lambda: models.from_saved_model(FIX / "cnn_savedmodel"),
                    have("tensorflow", "tf2jax"), 'pip install "jaxattack[tf]" tf2jax'),
    "onnx": (lambda: models.from_onnx(FIX / "cnn.onnx", **CIFAR), have("onnx"),
             'pip install "jaxattack[onnx]"'),
    "onnx-nchw": (lambda: models.from_onnx(FIX / "cnn.onnx", nhwc=False, **CIFAR),
                  have("onnx"), 'pip install "jaxattack[onnx]"'),
    "onnx-mixed": (lambda: models.from_onnx(FIX / "mixed.onnx", check=False,
                                            outputs="logits", num_classes=10, **CIFAR),
                   have("onnx"), 'pip install "jaxattack[onnx]"'),
}


def route(name):
    make, ok, hint = ROUTES[name]
    if not ok:
        pytest.skip(f"needs {hint}")
    return make()


@pytest.fixture(scope="module")
def sample():
    return data.load("sample", limit=2)[0]


def deepest(plan):
    return max(set(plan.costs) - {0})


@pytest.mark.parametrize("name", toys.fast_only(list(ROUTES), {"onnx-mixed"}))
def test_imported_models_get_an_exact_sparse_plan(name, sample):
    clf = route(name)
    shape = sample.shape[1:]
    g = sparse.graph(clf, shape)
    assert g.stop.startswith("reduce_sum (mixes positions"), g.stop
    assert sum(n.kind == "conv" for n in g.nodes) >= 3
    for k in KS:
        auto = sparse.plan(clf, k, shape, gain=0)
        assert auto is not None, sparse.why_not(clf, k, shape)
        for handover in sorted({auto.handover, deepest(auto)}):
            plan = sparse.plan(clf, k, shape, handover=handover)
            assert_exact(clf, plan, sample, candidates(k, 32, 32))


def test_the_onnx_cnn_of_mixed_blocks_reads_every_block(sample):
    clf = route("onnx-mixed")
    g = sparse.graph(clf, (32, 32, 3))
    convs = [n.conv for n in g.nodes if n.conv is not None]
    assert {c.groups for c in convs} >= {1, 16, 24}  # depthwise convolutions
    assert any(c.strides == (2, 2) for c in convs) and any(c.dilation == (2, 2) for c in convs)
    kinds = [n.kind for n in g.nodes]
    assert kinds.count("mix") >= 3  # the residual add, the concatenation, the gate
    pools = [n for n in g.nodes if n.kind == "pool"]
    assert [p.op.reducer for p in pools] == ["max", "sum"]
    assert pools[0].pad_value == -np.inf and pools[0].pads == ((1, 1), (1, 1))
    # the count_include_pad=False divisor varies over the map: a sliced constant
    assert any(o.spatial for s in pools[1].post.steps for o in s[1].operands)


def test_a_torch_module_runs_dense_and_says_why_in_one_line():
    if not have("torch"):
        pytest.skip('needs torch: pip install "torch==2.13.0+cpu"')
    clf = models.from_torch(mf.load_torch_cnn(), **CIFAR)
    reason = sparse.why_not(clf, 1, (32, 32, 3))
    assert "call back to the host" in reason and "\n" not in reason
    assert sparse.plan(clf, 1, (32, 32, 3), gain=0) is None


def test_the_planted_pixel_is_found_through_an_onnx_graph_sparse():
    if not have("onnx"):
        pytest.skip('needs onnx: pip install "jaxattack[onnx]"')
    from tests.test_importers import _planted_check_images

    clf = models.from_onnx(FIX / "planted.onnx", input_scale=1,
                           check_images=_planted_check_images())
    x = mf.planted_images(6)
    assert sparse.plan(clf, 1, (8, 8, 3), gain=0) is not None
    cfg = ja.AttackConfig(population=50, generations=30, forward="sparse")
    r = ja.attack(clf, x, np.zeros(6, int), cfg)
    assert r.success.all()
    np.testing.assert_array_equal(r.pixels[:, 0, :2], [[mf.PLANTED_X, mf.PLANTED_Y]] * 6)


class OpsNet(nnx.Module):
    """Ops no zoo model uses: a pad with a non-zero value, a stride-2 convolution padded on
    one side, a dilated depthwise convolution, swish, a leaky ReLU by ``where``, a square,
    a concatenation, a padded max pool, a strided channel slice, a grouped 1x1
    convolution, a clip, an average pool without the padding counted, a bias that varies
    over the map, a strided slice with an offset, and an NCHW convolution."""

    def __init__(self):
        rngs = nnx.Rngs(0)
        self.a = nnx.Conv(3, 8, (3, 3), strides=2, padding=((0, 1), (0, 1)),
                          kernel_init=init(0), rngs=rngs)
        self.b = nnx.Conv(8, 8, (3, 3), feature_group_count=8, kernel_dilation=2,
                          kernel_init=init(1), rngs=rngs)
        self.c = nnx.Conv(8, 16, (1, 1), feature_group_count=2, kernel_init=init(2),
                          rngs=rngs)
        self.pos = nnx.Param(jnp.asarray(0.3 * np.random.default_rng(3).standard_normal(
            (1, 5, 5, 16)), jnp.float32))
        self.w = nnx.Param(jnp.asarray(0.3 * np.random.default_rng(4).standard_normal(
            (4, 16, 3, 3)), jnp.float32))  # OIHW
        self.head = nnx.Linear(4, 5, kernel_init=init(5, 3.0), rngs=rngs)

    def __call__(self, images):
        x = images.astype(jnp.float32) / 127.5 - 1
        x = jnp.pad(x, ((0, 0), (1, 1), (2, 2), (0, 0)), constant_values=0.5)
        x = jax.nn.silu(self.a(x))
        x = jnp.where(x > 0, x, 0.1 * x)
        x = jnp.concatenate([x, self.b(x) ** 2], -1)
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        x = jnp.clip(self.c(x[..., ::2]), -2.0, 2.0)
        x = nnx.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False)
        x = (x + self.pos[...])[:, 1::2, ::2, :]
        x = lax.conv_general_dilated(jnp.transpose(x, (0, 3, 1, 2)), self.w[...], (1, 1),
                                     "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return self.head(jax.nn.relu(x).mean((2, 3)))


@pytest.mark.slow
def test_an_nnx_module_of_unusual_ops_is_read_whole_and_exact():
    clf = models.from_module(OpsNet(), 5, input_shape=(16, 16, 3), name="ops")
    shape = (16, 16, 3)
    g = sparse.graph(clf, shape)
    assert g.stop.startswith("reduce_sum (mixes positions"), g.stop
    kinds = [n.kind for n in g.nodes]
    assert "pick" in kinds and "pool" in kinds and "mix" in kinds
    # the 0.5-valued pad stays a node (only a zero pad folds into the convolution after it)
    (pad,) = [n for n in g.nodes if n.kind == "pad"]
    value = pad.pad_value  # a constant of the program here (jnp.pad casts it)
    assert float(value if isinstance(value, float) else g.consts(clf.params)[value]) == 0.5
    images = toys.random_images(2, 16, 16)
    for k in KS:
        auto = sparse.plan(clf, k, shape, gain=0)
        for handover in sorted(set(auto.costs) - {0}):
            plan = sparse.plan(clf, k, shape, handover=handover)
            assert_exact(clf, plan, images, candidates(k, 16, 16))


@pytest.fixture(scope="module")
def lite():
    if not have("onnx"):
        pytest.skip('needs onnx: pip install "jaxattack[onnx]"')
    return models.from_onnx(FIX / "lite.onnx", input_scale=1, check=False, outputs="logits",
                            num_classes=10, name="lite")


@pytest.mark.parametrize("k", toys.fast_only(KS, set()))
def test_an_efficientnet_lite_at_224_is_exact(lite, k):
    shape = (224, 224, 3)
    g = sparse.graph(lite, shape)
    convs = [n.conv for n in g.nodes if n.conv is not None]
    assert sum(c.groups > 1 for c in convs) >= 7  # every stage's depthwise convolution
    assert {c.shape[0] for c in convs if c.groups > 1} == {3, 5}
    images = np.random.default_rng(k).integers(0, 256, (2, *shape), dtype=np.uint8)
    plan = sparse.plan(lite, k, shape, gain=0)
    assert plan.handover >= 10, plan.describe()  # deep into the network at 224
    assert_exact(lite, plan, images, candidates(k, 224, 224, n=20), moved_at_least=1e-4)


def test_the_sizing_counts_the_cache_of_224_problems(lite):
    space = codec.PixelSpace(1, 224, 224, 3)
    plan = sparse.plan(lite, 1, (224, 224, 3), gain=0)
    ev = evaluation.SparseEvaluator(lite, space, plan=plan, population=400)
    cache = plan.cache_bytes()
    assert cache > 224 * 224 * 32 * 4  # at least the stem's 112 x 112 x 32 map... twice
    assert ev.bytes_per_candidate() >= cache // 400
    small = evaluation.SparseEvaluator(lite, space, plan=plan, population=1)
    assert small.bytes_per_candidate() >= cache


class ZeroPadNet(nnx.Module):
    def __init__(self):
        self.conv = nnx.Conv(3, 4, (3, 3), padding="VALID", kernel_init=init(0),
                             rngs=nnx.Rngs(0))

    def __call__(self, images):
        x = jnp.pad(images.astype(jnp.float32) / 255, ((0, 0), (0, 1), (2, 0), (0, 0)))
        return self.conv(x).mean((1, 2))


def test_a_zero_pad_folds_into_the_convolution_that_reads_it():
    clf = models.from_module(ZeroPadNet(), 4, input_shape=(8, 8, 3), name="zeropad")
    nodes = sparse.graph(clf, (8, 8, 3)).nodes
    assert [n.kind for n in nodes] == ["input", "map", "conv"]
    assert nodes[2].pads == ((0, 1), (2, 0))
    plan = sparse.plan(clf, 2, (8, 8, 3), gain=0)
    assert_exact(clf, plan, toys.random_images(2), candidates(2, 8, 8))
