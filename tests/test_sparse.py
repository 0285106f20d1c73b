"""The sparse forward pass (issues 16, 32): the graph read from each model's jaxpr, exact
against the dense forward, its receptive field cones against hand-computed ones, the
dense fallback, and the attack unchanged.

Every probability check compares ``plan.probs`` with the classifier's own dense forward
of the painted images (painted on the host by ``codec.paint_numpy``), so a wrong window,
a wrong paste order or a wrong handover shows as a probability error.

The zoo matrix runs a covering subset of (model, k) by default (~4.5 min for the file
on 2 shared cores); ``JAXATTACK_SPARSE_FULL=1`` runs all 25 pairs (~1.5 min more).
"""

import functools
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxattack as ja
from jaxattack import data, models, sparse
from jaxattack.classifier import predict
from jaxattack.pixels import evaluation
from jaxattack.runs import sweep
from jaxattack.sparse import geometry
from jaxattack.strategies import codec
from tests import toys

ZOO = ("tiny", "resnet20", "allcnn", "nin", "vgg16")
KS = (1, 2, 3, 5, 10)
N_CANDIDATES = 24
TOL32 = 1e-5
# The checks compile many small programs; without LLVM's expensive passes they compile
# ~2.5x faster on CPU and compute the same float32 arithmetic.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


# ---- helpers ---------------------------------------------------------------------------

@functools.cache
def zoo(name, dtype=None):
    return models.load(name, dtype=dtype)


@pytest.fixture(scope="module")
def sample():
    return data.load("sample", limit=2)[0]


def candidates(k, h, w, n=N_CANDIDATES, problems=2, seed=0):
    """int32 ``[problems, n, k, 5]``: corners, edges, adjacent, repeated and random pixels."""
    assert n >= 20, "the special candidates take the first 19"
    rng = np.random.default_rng(seed + 97 * k)
    xs = rng.integers(0, w, (problems, n, k))
    ys = rng.integers(0, h, (problems, n, k))
    corners = [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)]
    for c, (x, y) in enumerate(corners):  # 0..3: the first pixel on a corner
        xs[:, c, 0], ys[:, c, 0] = x, y
    for j in range(k):  # 4: the pixels cycle over the four corners
        xs[:, 4, j], ys[:, 4, j] = corners[j % 4]
    xs[:, 5], ys[:, 6] = 0, 0  # 5..8: every pixel on one edge
    xs[:, 7], ys[:, 8] = w - 1, h - 1
    # 9, 10: a horizontal / vertical run of adjacent pixels ending on the far corner
    xs[:, 9], ys[:, 9] = np.clip(w - k + np.arange(k), 0, w - 1), h - 1
    xs[:, 10], ys[:, 10] = w - 1, np.clip(h - k + np.arange(k), 0, h - 1)
    # 11: a diagonal run of adjacent pixels from the origin; 12: pixels two apart
    xs[:, 11], ys[:, 11] = np.arange(k) % w, np.arange(k) % h
    xs[:, 12], ys[:, 12] = (5 + 2 * np.arange(k)) % w, 7
    if k > 1:
        # 13: every pixel at one position (the last colour wins); 14: pairs repeated;
        # 15: the same position first and last with others in between
        xs[:, 13], ys[:, 13] = xs[:, 13, :1], ys[:, 13, :1]
        xs[:, 14, 1::2], ys[:, 14, 1::2] = xs[:, 14, 0:k - 1:2], ys[:, 14, 0:k - 1:2]
        xs[:, 15, -1], ys[:, 15, -1] = xs[:, 15, 0], ys[:, 15, 0]
        xs[:, 16, 1:], ys[:, 16, 1:] = 0, 0  # repeated on a corner
    colour = rng.integers(0, 256, (problems, n, k, 3))
    colour[:, 17] = 255  # saturated and black candidates
    colour[:, 18] = 0
    return np.concatenate([xs[..., None], ys[..., None], colour], -1).astype(np.int32)


def sparse_probs(clf, plan, images, pixels):
    prepare = jax.jit(jax.vmap(plan.prepare, (None, 0)), compiler_options=FAST_COMPILE)
    caches = prepare(clf.params, jnp.asarray(images))
    probs = jax.jit(plan.probs, compiler_options=FAST_COMPILE)
    return np.asarray(probs(clf.params, caches, jnp.asarray(pixels)))


@functools.cache
def _dense_fn(clf):
    return jax.jit(clf.probs, compiler_options=FAST_COMPILE)


def dense_probs(clf, images, pixels):
    s, n = pixels.shape[:2]
    flat = np.repeat(np.asarray(images), n, axis=0)
    painted = codec.paint_numpy(flat, pixels.reshape(s * n, *pixels.shape[2:]))
    return np.asarray(_dense_fn(clf)(clf.params, jnp.asarray(painted))).reshape(s, n, -1)


def assert_exact(clf, plan, images, pixels, tol=TOL32, moved_at_least=1e-3):
    got = sparse_probs(clf, plan, images, pixels)
    ref = dense_probs(clf, images, pixels)
    assert got.shape == ref.shape == (*pixels.shape[:2], clf.num_classes)
    err = np.abs(got - ref).max(axis=(0, 2))
    assert err.max() <= tol, f"max error {err.max():.3g} per candidate {err.round(6)}"
    # not vacuous: the pixels do move the probabilities, by more than the tolerance
    clean = np.asarray(_dense_fn(clf)(clf.params, jnp.asarray(images)))
    moved = np.abs(ref - clean[:, None]).max()
    assert moved > max(moved_at_least, 2 * tol), moved
    return err.max()


def init(seed, scale=0.3):
    """A kernel initializer drawing with numpy: no XLA compile per kernel shape."""
    def fn(key, shape, dtype=jnp.float32):
        return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), dtype)
    return fn


# ---- a model with a receptive field computed on paper ----------------------------------

MEAN, STD = (120.0, 115.0, 100.0), (60.0, 62.0, 65.0)


class PaperNet(nnx.Module):
    """Normalize | 3x3 SAME conv, ReLU | 2x2 max pool | 3x3 stride-2 SAME conv | head."""

    def __init__(self, num_classes=4, seed=0):
        rngs = nnx.Rngs(seed)
        self.conv1 = nnx.Conv(3, 6, (3, 3), padding="SAME", kernel_init=init(seed),
                              rngs=rngs)
        self.conv2 = nnx.Conv(6, 8, (3, 3), strides=2, padding="SAME",
                              kernel_init=init(seed + 1), rngs=rngs)
        self.head = nnx.Linear(8, num_classes, kernel_init=init(seed + 2), rngs=rngs)

    def features(self, images):
        x = (images.astype(jnp.float32) - jnp.asarray(MEAN)) / jnp.asarray(STD)
        a = jax.nn.relu(self.conv1(x))
        n, h, w, c = a.shape
        b = a.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
        c2 = self.conv2(b)
        return a, b, c2

    def __call__(self, images):
        return self.head(self.features(images)[2].mean((1, 2)))


def paper_cone(coord, n):
    """Changed (lo, hi) per node of PaperNet along an axis of length n, for a pixel at
    ``coord``: 3x3 SAME conv spreads one each way; a 2x2 pool output o reads 2o, 2o+1;
    the stride-2 SAME conv (pads 0 before, 1 after) output o reads 2o .. 2o + 2."""
    conv1 = (max(coord - 1, 0), min(coord + 1, n - 1))
    m = n // 2
    pool = [o for o in range(m) if conv1[0] <= 2 * o + 1 and 2 * o <= conv1[1]]
    q = -(-m // 2)
    conv2 = [o for o in range(q) if pool[0] <= 2 * o + 2 and 2 * o <= pool[-1]]
    return [(coord, coord), (coord, coord), conv1, (pool[0], pool[-1]),
            (conv2[0], conv2[-1])]


def paper_net(h=32, w=32, **kw):
    return models.from_module(PaperNet(**kw), 4, input_shape=(h, w, 3), name="paper")


# hand-computed (rows, cols) per node: input, normalize, conv1, pool, conv2
HAND = {
    (0, 0): [((0, 0), (0, 0)), ((0, 0), (0, 0)), ((0, 1), (0, 1)), ((0, 0), (0, 0)),
             ((0, 0), (0, 0))],
    (5, 7): [((7, 7), (5, 5)), ((7, 7), (5, 5)), ((6, 8), (4, 6)), ((3, 4), (2, 3)),
             ((1, 2), (0, 1))],
    (31, 31): [((31, 31), (31, 31)), ((31, 31), (31, 31)), ((30, 31), (30, 31)),
               ((15, 15), (15, 15)), ((7, 7), (7, 7))],
}


def test_paper_cones_match_the_hand_computation():
    for (x, y), want in HAND.items():
        rows, cols = paper_cone(y, 32), paper_cone(x, 32)
        assert list(zip(rows, cols, strict=True)) == want


@pytest.mark.parametrize("h,w", [(32, 32), (20, 24)])
def test_cone_windows_hold_exactly_the_paper_cone(h, w):
    clf = paper_net(h, w)
    nodes = sparse.graph(clf, (h, w, 3)).nodes
    assert [n.kind for n in nodes] == ["input", "map", "conv", "pool", "conv"]
    assert [n.shape[:2] for n in nodes] == [(h, w), (h, w), (h, w), (h // 2, w // 2),
                                            (-(-h // 4), -(-w // 4))]
    cone = geometry.cones(nodes)
    # the smallest windows that hold every pixel's cone: 1, 1, 3, 2, 2
    assert cone.sizes == ((1, 1), (1, 1), (3, 3), (2, 2), (2, 2))
    for ax, n in ((0, h), (1, w)):
        for coord in range(n):
            for i, (lo, hi) in enumerate(paper_cone(coord, n)):
                start, size = int(cone.starts[i][ax][coord]), cone.sizes[i][ax]
                assert 0 <= start and start + size <= nodes[i].shape[ax], (ax, coord, i)
                assert start <= lo and hi < start + size, (ax, coord, i, start, lo, hi)


def test_a_pixel_changes_dense_activations_only_inside_its_cone():
    model = PaperNet()
    model.eval()
    img = np.random.default_rng(3).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    base = [np.asarray(a) for a in model.features(jnp.asarray(img))]
    for x, y in [(0, 0), (5, 7), (31, 31), (16, 9)]:
        for colour in ([255, 0, 255], [0, 255, 0]):
            pert = img.copy()
            pert[0, y, x] = colour
            feats = [np.asarray(a) for a in model.features(jnp.asarray(pert))]
            rows, cols = paper_cone(y, 32)[2:], paper_cone(x, 32)[2:]
            for f, b, (r0, r1), (c0, c1) in zip(feats, base, rows, cols, strict=True):
                changed = np.abs(f - b).max(axis=(0, 3)) > 1e-6
                assert changed.any()
                inside = np.zeros_like(changed)
                inside[r0:r1 + 1, c0:c1 + 1] = True
                assert not (changed & ~inside).any(), ((x, y), np.argwhere(changed))


@pytest.mark.parametrize("h,w", [(20, 24)])  # neither square nor a power of 2
@pytest.mark.parametrize("k", [1, 3])
def test_hand_made_model_is_exact_at_any_image_size(h, w, k):
    clf = paper_net(h, w)
    plan = sparse.plan(clf, k, (h, w, 3), gain=0)
    assert plan is not None
    images = np.random.default_rng(k).integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    assert_exact(clf, plan, images, candidates(k, h, w))


# ---- every zoo model at every k --------------------------------------------------------

# Every model pays ~15 s once (building it, the declared-vs-forward check) and each k
# ~5-10 s of compiling, so by default each k runs on at least two models and each model
# on at least two k (tiny on all); JAXATTACK_SPARSE_FULL=1 runs all 25 (~3.5 min alone).
DEFAULT_PAIRS = {"tiny": KS, "resnet20": (1, 3, 10), "allcnn": (1, 5), "nin": (2, 10),
                 "vgg16": (1, 3)}
FULL = os.environ.get("JAXATTACK_SPARSE_FULL", "") not in ("", "0")
ZOO_PAIRS = [(name, k) for name in ZOO for k in KS if FULL or k in DEFAULT_PAIRS[name]]
FAST_PAIRS = {("tiny", 1), ("tiny", 3), ("resnet20", 1)}  # the rest: slow (--all)


def test_default_pairs_cover_every_model_and_k():
    assert set(DEFAULT_PAIRS) == set(ZOO)
    for k in KS:
        assert sum(k in ks for ks in DEFAULT_PAIRS.values()) >= 2, k
    assert all(len(ks) >= 2 for ks in DEFAULT_PAIRS.values())
    assert models.ARCHITECTURES.keys() >= set(ZOO)


@pytest.mark.parametrize("name,k", toys.fast_only(ZOO_PAIRS, FAST_PAIRS))
def test_zoo_sparse_probs_equal_the_dense_forward(name, k, sample):
    clf = zoo(name)
    plan = sparse.plan(clf, k, sample.shape[1:], gain=0)
    assert plan is not None, sparse.why_not(clf, k, sample.shape[1:])
    assert plan.handover in plan.costs and plan.handover != 0
    assert_exact(clf, plan, sample, candidates(k, 32, 32))


def test_candidates_cover_the_cases():
    px = candidates(3, 32, 32)
    assert {(0, 0), (31, 0), (0, 31), (31, 31)} <= {tuple(p) for p in px[0, :5, :, :2]
                                                    .reshape(-1, 2).tolist()}
    assert (px[:, 13, :, :2] == px[:, 13, :1, :2]).all()  # one position three times
    assert (px[:, 13, 0, 2:] != px[:, 13, -1, 2:]).any()  # ... in different colours
    # the painter the references use lets the later pixel win, as codec.paint does
    img = np.zeros((1, 4, 4, 3), np.uint8)
    two = np.array([[[1, 2, 10, 20, 30], [1, 2, 40, 50, 60]]], np.int32)
    np.testing.assert_array_equal(codec.paint_numpy(img, two)[0, 2, 1], [40, 50, 60])
    np.testing.assert_array_equal(np.asarray(codec.paint(jnp.asarray(img[0]),
                                                         jnp.asarray(two[0])))[2, 1],
                                  [40, 50, 60])


@pytest.mark.slow
def test_every_handover_of_tiny_is_exact(sample):
    clf = zoo("tiny")
    shape = sample.shape[1:]
    auto = sparse.plan(clf, 1, shape, gain=0)
    handovers = sorted(set(auto.costs) - {0})
    assert len(handovers) >= 3
    px = candidates(1, 32, 32, n=20)
    for h in handovers:
        for delta in (False, True):  # every window from a crop / in the delta form
            plan = sparse.plan(clf, 1, shape, handover=h, delta=delta)
            assert plan.handover == h
            convs = [i for i in range(2, h + 1) if geometry.delta_ok(
                sparse.graph(clf, shape).nodes, i)]
            assert list(plan.deltas) == (convs if delta else [])
            assert_exact(clf, plan, sample, px)
    with pytest.raises(ValueError, match="handover must be one of"):
        sparse.plan(clf, 1, shape, handover=0)


@pytest.mark.parametrize("name,k", toys.fast_only([("tiny", 3), ("resnet20", 2), ("nin", 1)],
                                                   {("tiny", 3)}))
def test_the_delta_form_is_exact_with_overlapping_and_repeated_pixels(name, k, sample):
    """Every convolution that can runs as clean + conv(change): k windows that overlap
    or coincide each count once; residual blocks and 5x5 kernels."""
    clf = zoo(name)
    plan = sparse.plan(clf, k, sample.shape[1:], gain=0, delta=True,
                       handover=max(geometry.cuts(sparse.graph(clf, sample.shape[1:]).nodes)[:8]))
    assert len(plan.deltas) >= 2 and "(delta)" in plan.describe()
    assert_exact(clf, plan, sample, candidates(k, 32, 32))


def test_the_delta_form_takes_only_stride_1_float32_convolutions_of_a_map():
    clf = paper_net()
    nodes = sparse.graph(clf, (32, 32, 3)).nodes
    # input, normalize, conv1 (stride 1, reads a map), pool, conv2 (stride 2)
    assert [geometry.delta_ok(nodes, i) for i in range(5)] == [False, False, True,
                                                                 False, False]
    low = zoo("tiny", "bfloat16")
    nodes = sparse.graph(low, (32, 32, 3)).nodes
    assert not any(geometry.delta_ok(nodes, i) for i in range(len(nodes)))
    assert sparse.plan(low, 1, (32, 32, 3), gain=0, delta=True).deltas == ()
    tiny = zoo("tiny")
    assert sparse.plan(tiny, 1, (32, 32, 3), gain=0, delta=False).deltas == ()


@pytest.mark.slow
def test_bfloat16_tiny_has_a_plan_close_to_its_dense_forward(sample):
    clf = zoo("tiny", "bfloat16")
    plan = sparse.plan(clf, 1, sample.shape[1:], gain=0)
    assert plan is not None, sparse.why_not(clf, 1, sample.shape[1:])
    assert_exact(clf, plan, sample, candidates(1, 32, 32, n=20), tol=2e-2)


def test_describe_and_memory_estimates(sample):
    clf = zoo("tiny")
    plan = sparse.plan(clf, 1, sample.shape[1:], gain=0)
    text = plan.describe()
    assert "tiny" in text and "k=1" in text and "speed-up" in text and "\n" not in text
    assert plan.cache_bytes() > 0 and plan.handover_bytes() > 0 and plan.window_bytes() > 0


# ---- the fallback to the dense forward --------------------------------------------------

def space(h=10, w=10, k=1):
    return codec.PixelSpace(k, h, w, 3)


class CumsumNet(nnx.Module):
    """A convolution, then an op without a sparse rule (a cumulative sum over rows), then
    another convolution: the plan hands over to dense before the cumsum."""

    def __init__(self):
        self.conv = nnx.Conv(3, 4, (3, 3), kernel_init=init(0), rngs=nnx.Rngs(0))
        self.conv2 = nnx.Conv(4, 4, (3, 3), kernel_init=init(1), rngs=nnx.Rngs(0))

    def __call__(self, x):
        x = jax.nn.relu(self.conv(x.astype(jnp.float32) / 255))
        return self.conv2(jnp.cumsum(x, axis=1) / 8).mean((1, 2))


TOY_WEIGHTS = 3 * np.random.default_rng(0).standard_normal((10, 10, 3, 5)).astype(np.float32)


def fresh_toy():
    """A new classifier from a plain apply function on 10x10 images: logits linear in
    the pixels (an einsum over every position, so no spatial layer). New each call: the
    fallback warns once per classifier."""
    def apply_fn(params, x):
        return jnp.einsum("nhwc,hwck->nk", x.astype(jnp.float32) / 255, params)

    return models.from_apply_fn(apply_fn, jnp.asarray(TOY_WEIGHTS), 5, outputs="logits",
                                name="toy")


NO_PLAN = "no spatial layer before its head, which starts at dot_general"


def test_a_model_without_spatial_layers_runs_dense_and_warns_once():
    clf = fresh_toy()
    with pytest.warns(UserWarning, match=f"runs dense for toy: {NO_PLAN}"):
        ev = evaluation.evaluator(clf, space(), forward="auto")
    assert type(ev) is evaluation.DenseEvaluator and ev.forward == "dense"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(evaluation.evaluator(clf, space(), forward="auto")) is \
            evaluation.DenseEvaluator
        assert type(evaluation.evaluator(clf, space(), forward="dense")) is \
            evaluation.DenseEvaluator


def test_auto_without_a_plan_gives_the_dense_result():
    clf = fresh_toy()
    x = toys.random_images(3, 10, 10)
    y = predict(clf, x).argmax(-1)
    cfg = ja.AttackConfig(population=12, generations=4)
    with pytest.warns(UserWarning, match=NO_PLAN):
        auto = ja.attack(clf, x, y, cfg)
    dense = ja.attack(clf, x, y, cfg.replace(forward="dense"))
    assert_same_result(auto, dense)


def test_forward_sparse_without_a_plan_is_one_clear_error():
    clf = fresh_toy()
    with pytest.raises(ValueError, match=f"forward='sparse' is not available for toy: "
                                         f"{NO_PLAN}") as e:
        evaluation.evaluator(clf, space(), forward="sparse")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="not available"):
        ja.attack(clf, toys.random_images(1, 10, 10), [0],
                  ja.AttackConfig(population=8, generations=1, forward="sparse"))


def test_an_op_without_a_rule_hands_over_to_dense_before_it(sample):
    clf = models.from_module(CumsumNet(), 4, input_shape=(12, 12, 3), name="cumsum")
    g = sparse.graph(clf, (12, 12, 3))
    assert g.stop == "cumsum (no sparse rule)"
    assert [n.kind for n in g.nodes] == ["input", "map", "conv"]
    plan = sparse.plan(clf, 1, (12, 12, 3), gain=0)
    assert "the head from cumsum (no sparse rule)" in plan.describe()
    images = toys.random_images(2, 12, 12)
    assert_exact(clf, plan, images, candidates(1, 12, 12))


def test_a_wrong_rule_is_caught_by_the_graph_check(monkeypatch):
    """The graph is checked against the model's own forward once per model and shape: a
    rule that computed something else (here ReLU as ``min``) leaves the model dense."""
    from jax import lax

    from jaxattack.sparse import rules as graph_mod

    right = graph_mod.RULES["max"]

    def wrong(w, eqn):
        right(w, eqn._replace(prim=lax.min_p))

    monkeypatch.setitem(graph_mod.RULES, "max", wrong)
    reason = sparse.why_not(paper_net(16, 16), 1, (16, 16, 3))  # a new classifier: no cache
    assert reason is not None and "does not reproduce its forward pass" in reason
    monkeypatch.undo()
    assert sparse.why_not(paper_net(16, 16), 1, (16, 16, 3)) is None


def test_bogus_forward_is_a_clear_error():
    with pytest.raises(ValueError, match=r"forward must be one of \('auto', 'dense', "
                                         r"'sparse'\), got 'bogus'"):
        ja.AttackConfig(forward="bogus")
    with pytest.raises(ValueError, match="forward must be one of"):
        evaluation.evaluator(fresh_toy(), space(), forward="bogus")


def test_cli_attack_help_lists_forward():
    from jaxattack.cli_parser import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    text = sub.choices["attack"].format_help()
    assert "--forward" in text and "{auto,dense,sparse}" in text


# ---- the attack with the sparse forward --------------------------------------------------

FIELDS = ("success", "search_success", "pixels", "generations", "queries", "adversarial",
          "predicted_after", "prob_adv_after", "prob_true_after", "image_index", "target")


def assert_same_result(a, b):
    assert len(a) == len(b)
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


TINY_CFG = ja.AttackConfig(population=40, generations=5)
# sample images on which this budget gives successes at generations 1 and 2 and a failure
TINY_IMAGES = [618, 59, 740, 513]


@pytest.fixture(scope="module")
def tiny_runs():
    x, y = data.load("sample")[:2]
    imgs, labels = x[TINY_IMAGES], y[TINY_IMAGES]
    clf = zoo("tiny")
    cfg = TINY_CFG.replace(forward="sparse")
    assert type(cfg.search(clf, imgs.shape[1:]).evaluate) is evaluation.SparseEvaluator
    return {f: ja.attack(clf, imgs, labels, cfg.replace(forward=f), image_ids=TINY_IMAGES)
            for f in ("dense", "sparse")}


def test_auto_runs_the_forward_it_timed_faster():
    clf = zoo("tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ev = evaluation.evaluator(clf, space(32, 32), forward="auto", population=40)
    choice = evaluation.auto_choice(clf, space(32, 32), 40)
    assert choice.dense_s > 0 and choice.sparse_s > 0 and choice.modelled > 1
    assert choice.forward == ("sparse" if choice.sparse_s < choice.dense_s else "dense")
    assert ev.forward == choice.forward
    # the very evaluator forward=<choice> builds: auto runs the same program
    assert ev == evaluation.evaluator(clf, space(32, 32), forward=choice.forward,
                                      population=40)
    assert 0 < ev.bytes_per_candidate()
    assert evaluation.timing_batch("cpu", 400) == (1, 50)  # the engine's call on XLA:CPU
    assert evaluation.timing_batch("cpu", 20) == (1, 20)
    assert evaluation.timing_batch("gpu", 400) == (10, 400)


def test_sparse_attack_equals_the_dense_attack(tiny_runs):
    assert_same_result(tiny_runs["sparse"], tiny_runs["dense"])
    r = tiny_runs["dense"]  # the comparison covers successes at several generations
    assert r.success.any() and not r.success.all() and len(set(r.generations.tolist())) > 1


class PlantedNet(nnx.Module):
    """``toys.planted`` as a network: a 3x3 conv whose centre tap picks the
    planted pixel's colour features, a sigmoid, and a head reading one position."""

    def __init__(self, bias=3.0):
        self.conv = nnx.Conv(3, 4, (3, 3), padding="SAME", kernel_init=init(0),
                             rngs=nnx.Rngs(0))
        k = np.zeros((3, 3, 3, 4), np.float32)
        k[1, 1, 0, 0], k[1, 1, 1, 1], k[1, 1, 2, 2], k[1, 1, 0, 3] = 1, -1, 1, -1
        self.conv.kernel[...] = jnp.asarray(k / 8)
        self.conv.bias[...] = jnp.asarray([-200, 50, -220, 40], jnp.float32) / 8
        self.bias = nnx.Param(jnp.asarray([bias, 0.0, 0.0]))

    def _head(self, x):
        s = x[:, toys.PLANTED_Y, toys.PLANTED_X]
        to1, to2 = s[:, 0] * s[:, 1], s[:, 2] * s[:, 3]
        return self.bias[...] + jnp.stack([jnp.zeros_like(to1), 8 * to1, 8 * to2], -1)

    def __call__(self, x):
        return self._head(jax.nn.sigmoid(self.conv(x.astype(jnp.float32))))


PLANTED_CFG = ja.AttackConfig(population=50, generations=30, forward="sparse")


@pytest.fixture(scope="module")
def planted_runs():
    clf = models.from_module(PlantedNet(), 3, input_shape=(8, 8, 3), name="planted_net")
    images = toys.random_images(6)
    np.testing.assert_allclose(predict(clf, images), predict(toys.planted(), images),
                               atol=1e-5)
    assert type(PLANTED_CFG.search(clf, (8, 8, 3)).evaluate) is evaluation.SparseEvaluator
    labels = np.zeros(6, int)
    return images, {
        "batch4": ja.attack(clf, images, labels, PLANTED_CFG.replace(batch_size=4)),
        "batch1": ja.attack(clf, images, labels, PLANTED_CFG.replace(batch_size=1)),
        "devices2": ja.attack(clf, images, labels, PLANTED_CFG.replace(batch_size=4),
                              devices=2)}


@pytest.mark.slow
def test_sparse_attack_finds_the_planted_pixel(planted_runs):
    images, runs = planted_runs
    r = runs["batch4"]
    assert r.success.all() and r.search_success.all()
    np.testing.assert_array_equal(r.pixels[:, 0, :2], [[toys.PLANTED_X, toys.PLANTED_Y]] * 6)
    assert ((r.adversarial != images).any(-1).sum((1, 2)) <= 1).all()
    assert (r.predicted_after != 0).all()
    assert len(set(r.generations.tolist())) > 1  # the invariance checks below see that


@pytest.mark.slow
def test_sparse_attack_is_the_same_at_any_batch_size(planted_runs):
    runs = planted_runs[1]
    assert_same_result(runs["batch1"], runs["batch4"])


def test_sparse_attack_is_the_same_on_two_devices(planted_runs):
    runs = planted_runs[1]
    assert_same_result(runs["devices2"], runs["batch4"])


@pytest.mark.slow
def test_sweep_rows_record_the_forward_the_search_ran(tmp_path):
    """forward="auto" resolves per model and k: each stored row says which one ran, so a
    run folder resumed after the cost model changed shows what it mixes."""
    clf = models.from_module(PlantedNet(), 3, input_shape=(8, 8, 3), name="planted_net")
    images = toys.random_images(2)
    exps = [sweep.Experiment("planted_net", PLANTED_CFG.replace(generations=2, forward=f))
            for f in ("sparse", "dense")]
    st = sweep.run(exps, tmp_path, images=2, load_model=lambda n: clf, progress=False,
                   load_data=lambda s, split: (images, np.zeros(2, int), ("a", "b", "c")))
    used = sorted((r["forward"], r["forward_used"]) for r in st.rows())
    assert used == [("dense", "dense")] * 2 + [("sparse", "sparse")] * 2


# ---- a pre-activation residual block; a model with no spatial layer ---------------------

class PreActNet(nnx.Module):
    """A pre-activation residual block: ``conv(relu(x)) + x``, after a stem conv."""

    def __init__(self):
        self.stem = nnx.Conv(3, 4, (3, 3), kernel_init=init(0), rngs=nnx.Rngs(0))
        self.conv = nnx.Conv(4, 4, (3, 3), kernel_init=init(1), rngs=nnx.Rngs(0))

    def __call__(self, x):
        x = self.stem(x.astype(jnp.float32) / 255)
        return (self.conv(jax.nn.relu(x)) + x).mean((1, 2))


def test_two_readers_of_different_functions_of_a_node_get_a_map_node():
    """A pre-activation residual block reads the stem's output and its ReLU: the ReLU
    becomes a map node of its own, computed from the stem's windows as they are."""
    clf = models.from_module(PreActNet(), 4, input_shape=(8, 8, 3), name="preact")
    nodes = sparse.graph(clf, (8, 8, 3)).nodes
    assert [n.kind for n in nodes] == ["input", "map", "conv", "map", "conv", "mix"]
    stem_post = [s[1].eqn.name for s in nodes[2].post.steps]
    assert stem_post == ["add"]  # the bias only: the stem keeps no ReLU
    assert nodes[3].inputs == (2,) and nodes[3].direct
    assert nodes[5].inputs == (4, 2)
    plan = sparse.plan(clf, 2, (8, 8, 3), gain=0, handover=5)
    assert_exact(clf, plan, toys.random_images(2), candidates(2, 8, 8))


class HeadOnlyNet(nnx.Module):
    def __init__(self):
        self.lin = nnx.Linear(3, 4, kernel_init=init(2), rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.lin(x.astype(jnp.float32).mean((1, 2)))


def test_a_model_that_pools_globally_at_once_falls_back():
    clf = models.from_module(HeadOnlyNet(), 4, input_shape=(8, 8, 3), name="headonly")
    assert isinstance(sparse.why_not(clf, 1, (8, 8, 3)), str)
    with pytest.warns(UserWarning, match="runs dense for headonly"):
        ev = evaluation.evaluator(clf, space(8, 8), forward="auto")
    assert type(ev) is evaluation.DenseEvaluator
