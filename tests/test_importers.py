"""Models from other frameworks: Keras 3, TF SavedModel, ONNX (from PyTorch), torch.

Each route must give the probabilities of its source framework within 1e-5 on real
CIFAR-10 images at batch sizes 1, 7 and 400 under shard_map over 2 devices, let the
planted-pixel attack through, and turn wrong conventions into clear errors. The model
files are the committed fixtures of tests/fixtures/make_fixtures.py. A test is skipped,
with the extra to install, when its framework is absent.
"""

import os
import re
import warnings

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports keras

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.sharding import Mesh  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxattack as ja  # noqa: E402
from jaxattack import data, models  # noqa: E402
from jaxattack.models import conventions as cv  # noqa: E402
from tests import toys  # noqa: E402
from tests.fixtures import make_fixtures as mf  # noqa: E402
from tests.toys import have, keras_on_jax  # noqa: E402

FIX = mf.HERE
TOL = 1e-5
BATCHES = (1, 7, 400)
CIFAR = dict(mean="cifar10", std="cifar10")  # the torch/ONNX CNN's convention


needs_keras = pytest.mark.skipif(not keras_on_jax(),
                                 reason='needs Keras 3 on the JAX backend: pip install '
                                        '"jaxattack[keras]" (and KERAS_BACKEND=jax)')
needs_tf = pytest.mark.skipif(not have("tensorflow", "tf2jax"),
                              reason='needs TensorFlow and tf2jax: pip install "jaxattack[tf]" '
                                     '&& pip install --no-deps tf2jax')
needs_onnx = pytest.mark.skipif(not have("onnx"),
                                reason='needs onnx: pip install "jaxattack[onnx]"')
needs_jort = pytest.mark.skipif(not have("onnx", "jaxonnxruntime"),
                                reason='needs jaxonnxruntime: pip install "jaxattack[onnx]"')
needs_torch = pytest.mark.skipif(not have("torch"),
                                 reason='needs torch: pip install "torch==2.13.0+cpu" (CPU build)')


@pytest.fixture(scope="module")
def real():
    """400 real CIFAR-10 test images (40 per class) and their labels."""
    x, y, _ = data.load("sample", limit=400)
    return x, y


def sharded_probs(clf, x):
    """``clf.probs`` as the engine runs it: jit(shard_map) over a 1-D mesh of 2 devices,
    the batch split in two (padded to an even size, the padding dropped)."""
    mesh = Mesh(np.array(jax.devices()[:2]), ("d",))
    n = len(x)
    xp = np.concatenate([x, x[: n % 2]])
    fn = jax.jit(jax.shard_map(clf.probs, mesh=mesh, in_specs=(P(), P("d")),
                               out_specs=P("d"), check_vma=False))
    return np.asarray(fn(clf.params, xp))[:n]


def softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def assert_matches(clf, reference, x):
    """Route vs source at batch sizes 1, 7 and 400, sharded over 2 devices."""
    for n in BATCHES:
        got = sharded_probs(clf, x[:n])
        want = reference(x[:n])
        assert got.shape == want.shape == (n, clf.num_classes)
        err = np.abs(got - want).max()
        assert err <= TOL, f"batch {n}: max |difference| {err:.2g}"


def torch_reference(net, scale=1.0, mean=mf.CIFAR_MEAN, std=mf.CIFAR_STD):
    import torch

    def ref(x):
        t = torch.from_numpy(x).permute(0, 3, 1, 2).double() / 255 * scale
        if mean is not None:
            t = (t - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / \
                torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
        with torch.no_grad():
            return softmax(net(t.float()).numpy())

    return ref


# ----------------------------------------------------------------------------- the routes


@needs_keras
def test_keras_matches_keras_within_1e5(real):
    import keras

    model = keras.saving.load_model(FIX / "cnn.keras")
    clf = models.from_keras(model, input_scale=255)
    assert (clf.outputs, clf.num_classes, clf.input_shape) == ("probs", 10, (32, 32, 3))
    x, y = real
    # predict() donates the variables' buffers; the classifier holds copies.
    ref = lambda im: np.asarray(model.predict(im.astype(np.float32), verbose=0), np.float64)
    assert_matches(clf, ref, x)
    assert (sharded_probs(clf, x).argmax(1) == y).mean() > 0.5  # a trained model (61 %)


@needs_tf
def test_saved_model_matches_tensorflow_within_1e5(real):
    import tensorflow as tf

    clf = models.from_saved_model(FIX / "cnn_savedmodel")
    assert (clf.outputs, clf.num_classes, clf.input_shape) == ("logits", 10, (32, 32, 3))
    sig = tf.saved_model.load(str(FIX / "cnn_savedmodel")).signatures["serving_default"]
    ref = lambda im: softmax(sig(image=tf.constant(im.astype(np.float32) / 255))["output"])
    assert_matches(clf, ref, real[0])


@pytest.mark.slow
@needs_tf
def test_saved_model_with_a_static_batch_size_runs_at_any_batch_size(tmp_path):
    """A signature with a fixed batch size runs under vmap over chunks of that size."""
    mf.save_tf(mf.tf_planted(batch=2), tmp_path / "static")
    x = _planted_check_images()
    free = models.from_saved_model(FIX / "planted_savedmodel", check_images=x)
    static = models.from_saved_model(tmp_path / "static", check_images=x)
    for n in (1, 7, 48):
        np.testing.assert_allclose(np.asarray(static(x[:n])), np.asarray(free(x[:n])),
                                   atol=1e-6)


@needs_onnx
@needs_torch
@pytest.mark.parametrize("kw", [{}, {"nhwc": False}], ids=["nhwc", "onnx-layout"])
def test_onnx_matches_torch_and_onnxruntime_within_1e5(real, kw):
    clf = models.from_onnx(FIX / "cnn.onnx", **CIFAR, **kw)
    assert (clf.outputs, clf.num_classes, clf.input_shape) == ("logits", 10, (32, 32, 3))
    assert_matches(clf, torch_reference(mf.load_torch_cnn()), real[0])
    if have("onnxruntime"):  # the ONNX reference runtime, when installed
        import onnxruntime

        sess = onnxruntime.InferenceSession(str(FIX / "cnn.onnx"))
        ref = lambda im: softmax(sess.run(None, {"input": np.asarray(
            ((im / 255 - mf.CIFAR_MEAN) / mf.CIFAR_STD).transpose(0, 3, 1, 2), np.float32)})[0])
        assert_matches(clf, ref, real[0])


@pytest.mark.slow
@needs_jort
@needs_torch
def test_onnx_through_jaxonnxruntime_within_1e5(real):
    clf = models.from_onnx(FIX / "cnn.onnx", **CIFAR, backend="jaxonnxruntime")
    assert_matches(clf, torch_reference(mf.load_torch_cnn()), real[0])


@needs_torch
def test_torch_matches_torch_within_1e5_and_warns_once(real):
    from jaxattack.models import torch as jt

    net = mf.load_torch_cnn()
    clf = models.from_torch(net, **CIFAR, input_shape=(32, 32, 3))
    assert (clf.outputs, clf.num_classes) == ("logits", 10)
    jt._WARNED = False
    with pytest.warns(RuntimeWarning, match="runs in PyTorch on the host") as rec:
        assert_matches(clf, torch_reference(net), real[0])
    assert len([w for w in rec if "runs in PyTorch" in str(w.message)]) == 1


@needs_onnx
def test_nhwc_graph_compiles_without_transposes():
    """The fast path: the convolutions run NHWC with HWIO weights transposed at import,
    and XLA's optimised program holds no transpose at all (the one before the Flatten
    acts on a 1x1 spatial map and becomes a bitcast)."""
    clf = models.from_onnx(FIX / "cnn.onnx", **CIFAR)
    x = np.zeros((4, 32, 32, 3), np.uint8)
    hlo = jax.jit(clf.probs).lower(clf.params, x).as_text()
    convs = [line for line in hlo.splitlines() if "stablehlo.convolution" in line]
    assert len(convs) == 3 and all("[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]" in c
                                   for c in convs)
    compiled = jax.jit(clf.probs).lower(clf.params, x).compile().as_text()
    assert not re.search(r"\btranspose\(", compiled)
    assert all(k.endswith(":hwio") for k, v in clf.params.items() if v.ndim == 4)


@needs_onnx
def test_onnx_legacy_view_and_static_batch_exports_work_at_any_batch_size():
    """jaxonnxruntime fails on both (see the next test); the interpreter runs them."""
    x = mf.planted_images(7)
    want = None
    for f in ("planted.onnx", "planted_legacy.onnx", "planted_static.onnx"):
        clf = models.from_onnx(FIX / f, check=False, outputs="logits", num_classes=3)
        got = [np.asarray(jax.jit(clf.probs)(clf.params, x[:n])) for n in (1, 7)]
        want = got if want is None else want
        np.testing.assert_allclose(got[1], want[1], atol=1e-6)
        np.testing.assert_allclose(got[0], want[1][:1], atol=1e-6)


@needs_jort
def test_jaxonnxruntime_failure_names_the_export_that_works():
    with pytest.raises(cv.ModelImportError, match=r"dynamo=True.*nn\.Flatten.*view\(x\.size"):
        models.from_onnx(FIX / "planted_legacy.onnx", backend="jaxonnxruntime", check=False,
                         outputs="logits", num_classes=3)(mf.planted_images(3))


# ----------------------------------------------------------------------------- planted pixel


def _planted_check_images():
    """Check images for the planted toy: its planted pixel is neutral, class 1 or 2."""
    x = mf.planted_images(48, seed=1)
    x[16:32, mf.PLANTED_Y, mf.PLANTED_X] = (250, 10, 10)
    x[32:, mf.PLANTED_Y, mf.PLANTED_X] = (10, 10, 250)
    return x


def _planted_routes():
    routes = [pytest.param(lambda **k: models.from_file(FIX / "planted.keras", **k),
                           id="keras", marks=needs_keras)]
    routes.append(pytest.param(
        lambda **k: models.from_file(FIX / "planted_savedmodel", **k), id="saved_model",
        marks=needs_tf))
    for f in ("planted", "planted_legacy", "planted_static"):  # the variants: slow
        routes.append(pytest.param(
            lambda f=f, **k: models.from_file(FIX / f"{f}.onnx", **k), id=f"onnx-{f}",
            marks=[needs_onnx] + ([pytest.mark.slow] if f != "planted" else [])))
    routes.append(pytest.param(lambda **k: models.from_torch(mf.torch_planted(), **k),
                               id="torch", marks=needs_torch))
    return routes


@pytest.mark.parametrize("route", _planted_routes())
def test_planted_pixel_attack_passes_through(route):
    clf = route(input_scale=1, check_images=_planted_check_images())
    assert clf.num_classes == 3 and clf.outputs == "logits"
    x = mf.planted_images(6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # from_torch's host warning
        res = ja.attack(clf, x, np.zeros(6, int), ja.AttackConfig(population=100,
                                                                   generations=60))
    assert res.success.all(), res.summary()
    changed = np.argwhere((res.adversarial != x).any(-1))
    assert {(int(i), int(r), int(c)) for i, r, c in changed} == \
        {(i, mf.PLANTED_Y, mf.PLANTED_X) for i in range(6)}


@pytest.mark.slow
@needs_keras
def test_planted_pixel_at_224x224_through_keras():
    """A 224x224 model from another framework: the vulnerable pixels fill a 32x32
    region at rows 21..52, columns 84..115 (around (37, 100)); one pixel there with
    R - G > 0.5 flips the class."""
    import keras

    hw, (r0, c0), side = 224, (21, 84), 32
    inp = keras.Input((hw, hw, 3))
    dense = keras.layers.Dense(2, activation="relu")
    head = keras.layers.Dense(2)
    model = keras.Model(inp, head(dense(keras.layers.Flatten()(inp))))
    w = np.zeros((hw, hw, 3, 2), np.float32)
    w[r0:r0 + side, c0:c0 + side, 0, 0], w[r0:r0 + side, c0:c0 + side, 1, 0] = 1, -1
    dense.set_weights([w.reshape(-1, 2), np.array([-0.5, -1e9], np.float32)])
    head.set_weights([np.array([[0, 40], [0, 0]], np.float32), np.array([3, 0], np.float32)])
    check = np.full((8, hw, hw, 3), 128, np.uint8)
    check[4:, 37, 100] = (250, 5, 5)
    clf = models.from_keras(model, check_images=check)
    assert clf.input_shape == (hw, hw, 3)
    x = np.random.default_rng(0).integers(0, 256, (2, hw, hw, 3), dtype=np.uint8)
    x[:, r0:r0 + side, c0:c0 + side] = 128
    res = ja.attack(clf, x, np.zeros(2, int), ja.AttackConfig(population=100,
                                                              generations=40))
    assert res.success.all(), res.summary()
    rows, cols = np.nonzero((res.adversarial != x).any(-1))[1:]
    assert ((r0 <= rows) & (rows < r0 + side) & (c0 <= cols) & (cols < c0 + side)).all()


# ----------------------------------------------------------------------------- conventions


@needs_keras
def test_wrong_input_scale_is_a_clear_error():
    # The Keras CNN takes 0..255 (Rescaling inside): 0..1 is near chance.
    with pytest.raises(cv.ConventionError, match=r"input_scale=1,.* but \d+% with "
                                                 r"input_scale=255,.*check input_scale"):
        models.from_keras(FIX / "cnn.keras", input_scale=1)


@needs_onnx
def test_wrong_input_scale_onnx_is_a_clear_error():
    # The ONNX CNN takes normalised 0..1 input: raw 0..255 (or 0..1) is near chance,
    # and the check finds the CIFAR-10 statistics.
    for scale in (255, 1):
        with pytest.raises(cv.ConventionError, match=r"but \d+% with input_scale=.*mean=.*"
                                                     r"(cifar10|imagenet) statistics"):
            models.from_onnx(FIX / "cnn.onnx", input_scale=scale)
    # mean/std in 0..1 units with input_scale=255: the other scale fixes it.
    with pytest.raises(cv.ConventionError, match=r"input_scale=1 with the same mean/std"):
        models.from_onnx(FIX / "cnn.onnx", input_scale=255, mean=mf.CIFAR_MEAN,
                         std=mf.CIFAR_STD)


@needs_onnx
def test_nhwc_for_a_channels_first_graph_is_a_clear_error():
    with pytest.raises(cv.ConventionError, match=r"\[batch, 3, 32, 32\].*layout='NCHW'"):
        models.from_onnx(FIX / "cnn.onnx", layout="NHWC", **CIFAR)


@needs_keras
def test_nchw_for_a_channels_last_keras_model_is_a_clear_error():
    with pytest.raises(cv.ConventionError, match=r"channels-last.*layout='NHWC'"):
        models.from_keras(FIX / "cnn.keras", layout="NCHW", input_scale=255)


@needs_torch
def test_nhwc_for_a_torch_module_is_a_clear_error():
    with pytest.raises(cv.ConventionError, match=r"fed as NHWC.*layout='NCHW'"):
        models.from_torch(mf.load_torch_cnn(), layout="NHWC", **CIFAR)


@needs_onnx
def test_logits_declared_as_probabilities_is_a_clear_error():
    with pytest.raises(cv.ConventionError, match=r"look like logits, pass outputs='logits'"):
        models.from_onnx(FIX / "cnn.onnx", outputs="probs", **CIFAR)


@needs_keras
def test_probabilities_declared_as_logits_is_a_clear_error():
    with pytest.raises(cv.ConventionError, match=r"pass outputs='probs'"):
        models.from_keras(FIX / "cnn.keras", input_scale=255, outputs="logits")


@needs_torch
def test_constant_and_batch_dependent_models_are_clear_errors():
    import torch

    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 10) + torch.arange(10.0)

    class BatchMixer(torch.nn.Module):  # like BatchNorm in training mode
        def forward(self, x):
            f = x.mean((1, 2, 3))
            return torch.stack([f - f.mean(), f.mean() - f], 1)

    with pytest.raises(cv.ConventionError, match="do not change with its input"):
        models.from_torch(Constant())
    with pytest.raises(cv.ConventionError, match="depends on the rest of its batch"):
        models.from_torch(BatchMixer())


def test_convention_parsing():
    c = cv.make("0..255", mean="imagenet", std="imagenet", layout="nchw")
    assert c.input_scale == 255 and c.layout == "NCHW"
    np.testing.assert_allclose(c.mean, np.array(cv.PRESETS["imagenet"][0]) * 255)
    assert cv.make("0-1", mean="0.5,0.5,0.5", std=0.25).mean == (0.5, 0.5, 0.5)
    for bad in (dict(input_scale=0), dict(input_scale="big"), dict(layout="CHW"),
                dict(std=(1, 0, 1)), dict(mean="nope")):
        with pytest.raises(ValueError):
            cv.make(**bad)
    with pytest.raises(ValueError, match="4 values for a 3-channel"):
        cv.make(mean=(1, 2, 3, 4), channels=3)
    assert cv.infer_layout([None, 3, 224, 224], "auto", "m") == ("NCHW", (224, 224, 3))
    assert cv.infer_layout([None, 32, 32, 1], "auto", "m") == ("NHWC", (32, 32, 1))
    assert cv.infer_layout(None, "auto", "m", default="NCHW") == ("NCHW", None)


@pytest.mark.parametrize("route", ["from_keras", "from_saved_model", "from_onnx",
                                   "from_torch", "from_file"])
def test_an_unknown_option_is_a_one_line_type_error(route, tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"not read: the options are parsed first")
    importer = getattr(models, route)
    with pytest.raises(TypeError, match=r"^from_\w+\(\) got an unexpected keyword argument "
                                        r"'input_scal' \(did you mean 'input_scale'\?\); "
                                        r"the options every importer takes: input_scale, "):
        importer(tmp_path / "m.onnx", input_scal=255)


def test_conventions_does_not_import_checks():
    import ast

    from jaxattack.models import checks

    tree = ast.parse(open(cv.__file__).read())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
             for a in n.names} | {n.module for n in ast.walk(tree)
                                  if isinstance(n, ast.ImportFrom) and n.module}
    assert not any("checks" in n or "jaxattack" in n for n in names), names
    assert checks.Convention is cv.Convention  # the dependency runs checks -> conventions


# ----------------------------------------------------------------------------- files


def test_from_file_rejects_what_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.from_file(tmp_path / "nope.onnx")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(models.ModelImportError, match=r"\.txt file: jaxattack imports"):
        models.from_file(tmp_path / "notes.txt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(models.ModelImportError, match="without saved_model.pb"):
        models.from_file(tmp_path / "folder")


@needs_onnx
def test_garbage_onnx_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x00not a model at all" * 10)
    with pytest.raises(models.ModelImportError, match="is not an ONNX model"):
        models.from_file(tmp_path / "bad.onnx")


@needs_keras
def test_garbage_keras_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.keras").write_bytes(b"PK not a zip")
    with pytest.raises(models.ModelImportError, match="is not a Keras model file"):
        models.from_file(tmp_path / "bad.keras")


@needs_tf
def test_garbage_saved_model_is_a_clear_error(tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(models.ModelImportError, match="not a loadable SavedModel"):
        models.from_file(tmp_path / "sm")


@needs_torch
def test_torchscript_file_and_state_dict(tmp_path):
    import torch

    net = mf.torch_planted()
    example = torch.zeros(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated
        torch.jit.trace(net, example).save(str(tmp_path / "planted.pt"))
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(net, (example,), dynamic_shapes=({0: batch},)),
                      str(tmp_path / "planted.pt2"))
    x = _planted_check_images()
    for f in ("planted.pt", "planted.pt2"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            clf = models.from_file(tmp_path / f, check_images=x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            np.testing.assert_allclose(np.asarray(clf(x)), torch_reference(
                net, mean=None)(x), atol=TOL)
    with pytest.raises(models.ModelImportError, match="state_dict needs its module class"):
        models.from_file(FIX / "cnn.pt")


def test_importing_models_does_not_import_the_frameworks():
    import subprocess
    import sys

    code = ("import sys, jaxattack.models as m; m.from_file; "
            "print([k for k in ('keras', 'tensorflow', 'onnx', 'torch', 'tf2jax', "
            "'jaxonnxruntime') if k in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.stdout.strip() == "[]"


def test_fixtures_are_small():
    for f in mf.HERE.iterdir():
        size = sum(p.stat().st_size for p in f.rglob("*")) if f.is_dir() else f.stat().st_size
        assert size < 300_000, f"{f.name} is {size} bytes"


@pytest.mark.slow
@needs_torch
def test_torch_route_under_the_engine_on_2_devices_does_not_hang():
    """jax.pure_callback hangs under shard_map over 2 XLA:CPU devices once its input is
    ~100 KB (jax 0.10.2); from_torch's own callback primitive must not. In a subprocess,
    so that a hang fails the test instead of stalling the suite."""
    import subprocess
    import sys

    code = (
        "import jax, warnings; jax.config.update('jax_num_cpu_devices', 2)\n"
        "import numpy as np, jaxattack as ja\n"
        "from jaxattack import data, models\n"
        "from tests.fixtures import make_fixtures as mf\n"
        "warnings.simplefilter('ignore')\n"
        "clf = models.from_torch(mf.load_torch_cnn(), mean='cifar10', std='cifar10')\n"
        "x, y, _ = data.load('sample', limit=4)\n"
        "r = ja.attack(clf, x, y, ja.AttackConfig(population=100, generations=2), devices=2)\n"
        "print('ok', len(r.success))\n")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=env, cwd=mf.ROOT)
    assert out.returncode == 0 and "ok 4" in out.stdout, out.stderr[-2000:]


def _op_zoo():
    """A torch module using the ops the ONNX interpreter runs channels-last: strided,
    depthwise and dilated convolutions, BatchNorm, element-wise ops with channel
    constants, a residual add, a concatenation, padding, ceil-mode pools, reductions,
    a global pool, a flatten back to the ONNX layout, a softmax."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class OpZoo(nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.c1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.c2 = nn.Conv2d(8, 8, 1)
            self.c3 = nn.Conv2d(16, 12, 3, padding=(1, 2), dilation=(1, 2))
            self.avg = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True,
                                    count_include_pad=False)
            self.mp = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.fc = nn.Linear(12 * 4 * 4, 10)
            self.register_buffer("shift", torch.randn(1, 12, 1, 1, generator=g))
            with torch.no_grad():
                self.bn.running_mean.normal_(0, 0.3, generator=g)
                self.bn.running_var.uniform_(0.5, 2.0, generator=g)
                self.bn.weight.uniform_(0.5, 1.5, generator=g)

        def forward(self, x):
            x = F.relu(self.bn(self.c1(x)))                       # 16x16
            y = F.hardswish(self.dw(x)) * torch.sigmoid(self.c2(x)) + x
            z = self.c3(torch.cat([x, y], 1)) - self.shift        # 12 channels
            z = torch.cat([z[:, :6], z[:, 6:] * 2], 1)[:, :, 1:, 1:]  # slices, 15x15
            z = F.pad(F.leaky_relu(z, 0.1), (1, 0, 0, 1))         # 16x16
            z = torch.clamp(self.mp(self.avg(z)), -3, 3)          # 9x9 (ceil mode), then 4x4
            pooled = F.adaptive_avg_pool2d(z, 1).flatten(1) + z.amax((2, 3))
            return torch.softmax(self.fc(torch.flatten(z, 1)) + pooled.sum(1, True), 1)

    return OpZoo().eval()


@needs_onnx
@needs_torch
@pytest.mark.parametrize("exporter", toys.fast_only(["legacy", "dynamo"], {"legacy"}))
def test_onnx_op_coverage_matches_torch(tmp_path, exporter, real):
    import torch

    if exporter == "dynamo" and not have("onnxscript"):
        pytest.skip("the dynamo exporter needs onnxscript")
    net = _op_zoo()
    path = tmp_path / f"zoo_{exporter}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":  # optimize=False keeps BatchNormalization unfolded
            torch.onnx.export(net, (torch.zeros(2, 3, 32, 32),), str(path), dynamo=True,
                              optimize=False, external_data=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
        else:
            torch.onnx.export(net, (torch.zeros(2, 3, 32, 32),), str(path), dynamo=False,
                              do_constant_folding=False, input_names=["x"],
                              dynamic_axes={"x": {0: "batch"}})
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Conv", "Concat", "MaxPool", "AveragePool", "Softmax", "Slice", "Pad"} <= ops
    assert exporter == "dynamo" or "BatchNormalization" in ops
    x = real[0][:7]
    with torch.no_grad():  # the module ends in a softmax: compare its outputs directly
        want = net(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255).double().numpy()
    for nhwc in (True, False):
        clf = models.from_onnx(path, nhwc=nhwc, check=False, outputs="probs",
                               num_classes=10)
        got = np.asarray(jax.jit(clf.probs)(clf.params, x))
        np.testing.assert_allclose(got, want, atol=TOL, err_msg=f"nhwc={nhwc}, ops {ops}")


@needs_onnx
@needs_torch
def test_onnx_channels_last_input_graph(tmp_path, real):
    """A graph whose input is NHWC and that permutes to NCHW itself: layout 'auto' reads
    NHWC, and the leading Transpose becomes free."""
    import torch

    base = mf.load_torch_cnn()

    class NHWCInput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = base

        def forward(self, x):
            return self.net(x.permute(0, 3, 1, 2))

    path = tmp_path / "nhwc.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(NHWCInput().eval(), (torch.zeros(2, 32, 32, 3),), str(path),
                          dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    clf = models.from_onnx(path, **CIFAR)
    assert clf.input_shape == (32, 32, 3)
    assert_matches(clf, torch_reference(base), real[0])
    compiled = jax.jit(clf.probs).lower(clf.params, real[0][:4]).compile().as_text()
    assert not re.search(r"\btranspose\(", compiled)


def _lrn_graph():
    """A hand-written ONNX graph with an op the interpreter leaves to jaxonnxruntime
    (LRN) between a convolution and a global pool."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(0, 0.5, (6, 4)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("LRN", ["c"], ["l"], size=3, alpha=0.5, beta=0.75, bias=1.0),
        helper.make_node("GlobalAveragePool", ["l"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                     ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@needs_jort
def test_onnx_op_outside_the_interpreter_goes_to_jaxonnxruntime():
    model = _lrn_graph()
    x = np.random.default_rng(1).integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
    ours = models.from_onnx(model, check=False, outputs="logits", num_classes=4)
    theirs = models.from_onnx(model, check=False, outputs="logits", num_classes=4,
                              backend="jaxonnxruntime")
    got = np.asarray(jax.jit(ours.probs)(ours.params, x))
    np.testing.assert_allclose(got, np.asarray(theirs(x)), atol=TOL)
    if have("onnxruntime"):
        import onnxruntime

        sess = onnxruntime.InferenceSession(model.SerializeToString())
        ref = softmax(sess.run(None, {"x": (x / 255).astype(np.float32).transpose(0, 3, 1, 2)})[0])
        np.testing.assert_allclose(got, ref, atol=TOL)


@needs_onnx
@needs_torch
def test_onnx_if_on_a_shape_from_the_legacy_exporter(tmp_path):
    """The legacy exporter writes torch's local_response_norm with an If on a shape:
    only the branch taken is traced."""
    import onnx
    import torch
    from torch.nn import functional as F

    class LRN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return F.local_response_norm(self.c(x), 3).mean((2, 3))

    net = LRN().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 3, 8, 8),), str(tmp_path / "lrn.onnx"),
                          dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    assert "If" in {n.op_type for n in onnx.load(str(tmp_path / "lrn.onnx")).graph.node}
    x = _planted_check_images()[:7]
    clf = models.from_onnx(tmp_path / "lrn.onnx", check=False, outputs="logits",
                           num_classes=4)
    np.testing.assert_allclose(np.asarray(jax.jit(clf.probs)(clf.params, x)),
                               torch_reference(net, mean=None)(x), atol=TOL)
