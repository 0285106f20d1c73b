"""jaxattack.models: architectures, eval-mode purity, shifted-matmul conv, shipped weights."""

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxattack as ja
from jaxattack import Classifier, data, models
from jaxattack.models import layers, registry, weights
from tests import toys

PARAMS = {"tiny": 279_466, "resnet20": 269_722, "allcnn": 1_370_996, "nin": 968_404,
          "vgg16": 14_986_698}


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_every_architecture_is_listed():
    assert set(models.ARCHITECTURES) == set(PARAMS)
    info = models.available()
    assert set(info) == set(PARAMS)
    for entry in info.values():
        assert {"description", "weights_shipped", "test_accuracy", "params"} <= set(entry)


@pytest.mark.parametrize("name", toys.fast_only(sorted(PARAMS), {"tiny"}))
def test_architecture_params_and_batch_independence(name):
    params = nnx.state(models.build(name), nnx.Param)
    assert sum(x.size for x in jax.tree.leaves(params)) == PARAMS[name]
    clf = models.load(name, weights=None)
    assert clf.outputs == "logits" and clf.num_classes == 10 and clf.input_shape == (32, 32, 3)
    x = _images(4)
    fn = jax.jit(clf.apply_fn)
    batch = np.asarray(fn(clf.params, x))
    alone = np.asarray(fn(clf.params, np.repeat(x[:1], 4, axis=0)))[0]
    assert batch.shape == (4, 10) and np.isfinite(batch).all()
    np.testing.assert_allclose(alone, batch[0], rtol=1e-5, atol=1e-5)
    p = np.asarray(clf.probs(clf.params, x[:2]))
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)


def test_reshape_pools_match_reduce_window():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    want = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    np.testing.assert_array_equal(layers.max_pool2(x), want)
    np.testing.assert_allclose(layers.avg_pool2(x), x.reshape(2, 4, 2, 4, 2, 3).mean((2, 4)))


# ----------------------------------------------------------------------------- weights

SHIPPED = [n for n, e in models.available().items() if e["weights_shipped"]]


def test_tiny_weights_are_shipped():
    assert "tiny" in SHIPPED


@pytest.mark.parametrize("name", toys.fast_only(SHIPPED, {"tiny", "resnet20"}))
def test_shipped_weights_classify_sample_at_recorded_accuracy(name):
    entry = models.read_registry()[name]
    path = weights.WEIGHTS_DIR / entry["file"]
    assert weights.sha256(path) == entry["sha256"]
    clf = models.load(name)
    assert clf.class_names == data.CIFAR10_CLASSES
    x, y, _ = data.load("sample")
    fn = jax.jit(clf.apply_fn)
    pred = np.concatenate([np.asarray(fn(clf.params, x[i : i + 250])).argmax(-1)
                           for i in range(0, len(x), 250)])
    acc = float((pred == y).mean())
    assert abs(acc - entry["sample_accuracy"]) <= 0.01, (acc, entry["sample_accuracy"])


@pytest.mark.parametrize("name", SHIPPED[:1])
def test_flipped_byte_is_rejected(name, tmp_path):
    entry = models.read_registry()[name]
    bad = tmp_path / entry["file"]
    shutil.copy(weights.WEIGHTS_DIR / entry["file"], bad)
    blob = bytearray(bad.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    bad.write_bytes(bytes(blob))
    with pytest.raises(models.WeightsError, match="sha256"):
        models.load(name, weights=bad, sha256=entry["sha256"])


def test_truncated_or_mismatched_weight_files_are_rejected(tmp_path):
    tiny = models.build("tiny")
    path = tmp_path / "t.msgpack"
    weights.save(path, nnx.state(tiny, (nnx.Param, nnx.BatchStat)))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(models.WeightsError, match="not a valid msgpack"):
        models.load("tiny", weights=path)
    weights.save(path, nnx.state(tiny, (nnx.Param, nnx.BatchStat)))
    with pytest.raises(models.WeightsError, match="differ|shape"):
        models.load("resnet20", weights=path)
    with pytest.raises(models.WeightsError, match="not found"):
        models.load("tiny", weights=tmp_path / "missing.msgpack")


def test_weights_roundtrip_and_float16(tmp_path):
    m = models.build("resnet20", seed=3)
    state = nnx.state(m, (nnx.Param, nnx.BatchStat))
    d32 = weights.save(tmp_path / "a.msgpack", state)
    back = weights.restore(tmp_path / "a.msgpack", nnx.state(models.build("resnet20")), None)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(a, b)
    weights.save(tmp_path / "h.msgpack", state, dtype="float16")
    half = weights.restore(tmp_path / "h.msgpack", nnx.state(models.build("resnet20")), None)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(half))
    assert (tmp_path / "h.msgpack").stat().st_size < (tmp_path / "a.msgpack").stat().st_size * 0.6
    assert len(d32) == 64


def test_unshipped_and_unknown_models_give_clear_errors(monkeypatch):
    monkeypatch.setattr(models, "read_registry", lambda *a, **k: {})  # nothing shipped
    with pytest.raises(models.WeightsError, match="no weights shipped yet"):
        models.load("allcnn")
    with pytest.raises(ValueError, match="unknown model"):
        models.load("resnet1000")


def test_docs_model_card_matches_the_registry():
    root = Path(__file__).parents[1]
    text = (root / "docs" / "models.md").read_text()
    block = text.split("<!-- model-card:start -->\n")[1].split("<!-- model-card:end -->")[0]
    assert block == registry.model_card()
    assert registry.model_card() in (root / "README.md").read_text()


# ----------------------------------------------------------------------------- user models


class _UserNet(nnx.Module):
    def __init__(self, rngs):
        self.bn = nnx.BatchNorm(3, rngs=rngs)
        self.fc = nnx.Linear(32 * 32 * 3, 4, rngs=rngs)

    def __call__(self, x):
        x = self.bn(x.astype(jnp.float32) / 255.0)
        return self.fc(x.reshape(x.shape[0], -1))


def test_from_module_is_one_call_and_eval_mode():
    clf = models.from_module(_UserNet(nnx.Rngs(0)), num_classes=4, name="mine")
    assert isinstance(clf, Classifier) and clf.name == "mine"
    x = _images(3)
    out = jax.jit(clf.probs)(clf.params, x)
    one = jax.jit(clf.probs)(clf.params, x[:1])
    np.testing.assert_allclose(out[0], one[0], rtol=1e-5, atol=1e-6)


def test_from_apply_fn():
    w = jnp.ones((32 * 32 * 3, 3), jnp.float32)
    fn = lambda p, x: x.reshape(x.shape[0], -1).astype(jnp.float32) @ p
    assert models.from_apply_fn(fn, w, num_classes=3).outputs == "probs"  # as Classifier
    assert ja.Classifier(fn, w, 3).outputs == "probs"
    clf = models.from_apply_fn(fn, w, num_classes=3, outputs="logits")
    np.testing.assert_allclose(clf(_images(2)).sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(TypeError, match="nnx.Module"):
        models.from_module(fn, num_classes=3)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    x, y, _ = data.load("sample", per_class_limit=10)
    f32 = models.load("tiny")
    bf16 = models.load("tiny", dtype="bfloat16")
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(bf16.params))
    hlo = jax.jit(bf16.apply_fn).lower(bf16.params, x).as_text()
    assert "bf16" in hlo and "bf16" not in jax.jit(f32.apply_fn).lower(f32.params, x).as_text()
    a, b = jax.jit(f32.apply_fn)(f32.params, x), jax.jit(bf16.apply_fn)(bf16.params, x)
    assert b.dtype == jnp.float32 and b.shape == a.shape == (100, 10)
    assert float(jnp.mean(a.argmax(-1) == b.argmax(-1))) >= 0.95
    with pytest.raises(ValueError, match="float type"):
        models.set_compute_dtype(models.build("tiny"), "int8")
