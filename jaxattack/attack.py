"""``attack()``: validate, build problems, run the engine, verify, report."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxattack import codec, inputs, objective, strategies
from jaxattack.caches import memoize
from jaxattack.classifier import Classifier
from jaxattack.engine import Engine, SearchSpec, empty_slots
from jaxattack.result import AttackResult
from jaxattack.sharding import make_mesh, round_up

MODES = ("untargeted", "targeted", "all-targets")
# Images per device in one forward pass when batch_size is left to us. On XLA:CPU one
# population (400 images) is already as fast per image as any larger batch, and one slot
# per device never computes for a finished problem (benchmarks/README.md).
AUTO_IMAGES_PER_DEVICE = {"cpu": 400}
AUTO_IMAGES_PER_ACCELERATOR = 32768
PREDICT_CHUNK = 256


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """Attack settings. The defaults are the paper's (Su et al., 2019).

    pixels: k, the number of pixels changed.
    population, generations: DE budget; at most ``population * (generations + 1)``
      queries per problem.
    mode: ``untargeted``, ``targeted`` (one target per image) or ``all-targets``
      (each image toward every other class).
    seed: with the image id, the only source of randomness.
    F, crossover: DE/rand/1 scale, and the binomial crossover rate (None: none).
    early_stop: ``success`` (stop a problem once it is fooled), ``paper`` (targeted:
      target probability > 0.5; untargeted: true-class probability < 0.05) or ``none``.
    batch_size: problems searched together across all devices (each evaluates its
      whole population per generation); None picks one from the device count.
    strategy: ``de`` (the paper), ``de-bin``, ``de-best``, ``de-ctb``, ``jde`` or
      ``sparse-rs`` (see ``jaxattack.strategies``); every one costs ``population``
      queries per generation.
    loss: ``prob`` (the paper's probability fitness) or ``margin``.
    """

    pixels: int = 1
    population: int = 400
    generations: int = 100
    mode: str = "untargeted"
    seed: int = 0
    F: float = 0.5
    crossover: float | None = None
    early_stop: str = "success"
    batch_size: int | None = None
    strategy: str = "de"
    loss: str = "prob"

    def __post_init__(self):
        def need(ok, msg):
            if not ok:
                raise ValueError(msg)

        for f in ("pixels", "population", "generations", "seed"):
            if not isinstance(getattr(self, f), int | np.integer) or isinstance(
                    getattr(self, f), bool):
                raise TypeError(f"{f} must be an int, got {getattr(self, f)!r}")
        need(self.pixels >= 1, f"pixels must be >= 1, got {self.pixels}")
        need(self.population >= 4, f"population must be >= 4 for DE/rand/1, got "
                                   f"{self.population}")
        need(self.generations >= 0, f"generations must be >= 0, got {self.generations}")
        need(self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}")
        need(0 <= self.seed < 2**32, f"seed must lie in [0, 2**32), got {self.seed}")
        need(0 < self.F <= 2, f"F must lie in (0, 2], got {self.F}")
        need(self.crossover is None or 0 <= self.crossover <= 1,
             f"crossover must be None or in [0, 1], got {self.crossover}")
        need(self.early_stop in objective.EARLY_STOPS,
             f"early_stop must be one of {objective.EARLY_STOPS}, got {self.early_stop!r}")
        need(self.batch_size is None or self.batch_size >= 1,
             f"batch_size must be None or >= 1, got {self.batch_size}")
        need(self.strategy in strategies.NAMES,
             f"strategy must be one of {strategies.NAMES}, got {self.strategy!r}")
        need(self.loss in objective.LOSSES,
             f"loss must be one of {objective.LOSSES}, got {self.loss!r}")

    @classmethod
    def paper(cls, **overrides) -> AttackConfig:
        """The paper's setting, including its probability-threshold early stop."""
        return cls(**{"early_stop": "paper", **overrides})

    @property
    def max_queries(self) -> int:
        return self.population * (self.generations + 1)

    def replace(self, **changes) -> AttackConfig:
        return dataclasses.replace(self, **changes)


@memoize(16)
def _jitted_probs(classifier: Classifier):
    return jax.jit(classifier.probs)


def predict(classifier: Classifier, images: np.ndarray, chunk: int = PREDICT_CHUNK) -> np.ndarray:
    """Probabilities ``[B, K]`` in fixed-size, padded chunks (one compilation)."""
    if not len(images):
        return np.zeros((0, classifier.num_classes), np.float32)
    fn = _jitted_probs(classifier)
    out = []
    for i in range(0, len(images), chunk):
        part = images[i:i + chunk]
        pad = np.zeros((chunk - len(part), *part.shape[1:]), np.uint8)
        p = fn(classifier.params, jnp.asarray(np.concatenate([part, pad])))
        out.append(np.asarray(p)[: len(part)])
    return np.concatenate(out)


def problems(mode, labels, targets, num_classes):
    """Rows of (image_index, target) for the mode."""
    b = len(labels)
    if mode == "untargeted":
        if targets is not None:
            raise ValueError("targets were given but mode='untargeted'; use mode='targeted'")
        return np.arange(b), np.full(b, -1, np.int32)
    if mode == "targeted":
        if targets is None:
            raise ValueError("mode='targeted' needs targets: one target class per image")
        t = inputs.labels(targets, b, num_classes, what="targets")
        same = np.flatnonzero(t == labels)
        if same.size:
            raise ValueError(f"target equals the label for image(s) {same[:5].tolist()}")
        return np.arange(b), t
    if targets is not None:
        raise ValueError("mode='all-targets' attacks every other class; do not pass targets")
    img = np.repeat(np.arange(b), num_classes)
    tgt = np.tile(np.arange(num_classes, dtype=np.int32), b)
    keep = tgt != labels[img]
    return img[keep], tgt[keep]


def problem_keys(seed: int, image_ids: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """uint32 ``[P, 2]`` keys: ``fold_in(fold_in(key(seed), image_id), target + 1)``."""
    base = jax.random.PRNGKey(seed)
    per_image = jax.vmap(lambda i: jax.random.fold_in(base, i))(
        jnp.asarray(image_ids, jnp.uint32))
    keys = jax.vmap(jax.random.fold_in)(per_image, jnp.asarray(targets + 1, jnp.uint32))
    return np.asarray(keys)


def num_slots(config: AttackConfig, num_problems: int, mesh) -> int:
    """Slots for ``config.batch_size``, or the per-platform default, over ``mesh``."""
    devices = mesh.devices.size
    if config.batch_size is not None:
        return round_up(config.batch_size, devices)
    platform = mesh.devices.flat[0].platform
    images = AUTO_IMAGES_PER_DEVICE.get(platform, AUTO_IMAGES_PER_ACCELERATOR)
    per_device = max(1, images // config.population)
    return min(per_device * devices, round_up(num_problems, devices))


def search(engine: Engine, keys, images, labels, targets, on_finished, progress=False,
           desc=None, refill: bool = True) -> float:
    """Continuous batching over a queue of problems (rows of the argument arrays).

    Slots are refilled as problems finish, until the queue drains. For each batch of
    finished problems, ``on_finished(rows, genes, found, generations, first_hit)`` is
    called (``first_hit``: the generation of the search's first success, -1 if none).
    The progress bar's ``hits`` are the search's own successes over all problems,
    before verification and including images the model already misclassifies.
    ``refill=False`` runs fixed batches instead (each batch until its last problem
    finishes; for comparison). Returns the utilisation: useful slot-generations over
    computed ones.
    """
    P, S = len(keys), engine.num_slots
    per_dev = S // engine.mesh.devices.size
    in_slot = np.full(S, -1)
    queued = hits = queries = 0
    bar = tqdm(total=P, unit="problem", disable=not progress, file=sys.stderr, desc=desc,
               dynamic_ncols=True, smoothing=0.1)
    t0 = time.perf_counter()
    with bar:
        while (in_slot >= 0).any() or queued < P:
            free = np.flatnonzero(in_slot < 0)[: P - queued]
            if not refill and (in_slot >= 0).any():
                free = free[:0]  # fixed batches: load only into an empty engine
            if free.size:
                rows = np.arange(queued, queued + free.size)
                new = empty_slots(engine.spec, S)
                new.key[free], new.image[free] = keys[rows], images[rows]
                new.label[free], new.target[free] = labels[rows], targets[rows]
                new.active[free] = True
                mask = np.zeros(S, bool)
                mask[free] = True
                engine.load(mask, new)
                in_slot[free], queued = rows, queued + free.size
            # Return to the host for a refill once some slots finish; at the end, run out.
            view = engine.evolve(max(1, per_dev // 8) if queued < P and refill else per_dev)
            done = np.flatnonzero((in_slot >= 0) & ~view.active)
            if done.size:
                on_finished(in_slot[done], view.genes[done], view.found[done],
                            view.generation[done].astype(np.int64),
                            view.first_hit[done].astype(np.int64))
            in_slot[done] = -1
            hits += int(view.found[done].sum())
            queries += int(engine.spec.population * (view.generation[done] + 1).sum())
            bar.update(done.size)
            if progress and bar.n:
                rate = queries / max(time.perf_counter() - t0, 1e-9)
                util = queries / engine.spec.population / max(engine.computed, 1)
                bar.set_postfix(hits=f"{hits}/{bar.n}", q_s=f"{rate:,.0f}",
                                util=f"{util:.0%}", refresh=False)
    return queries / engine.spec.population / max(engine.computed, 1)


def verify(classifier: Classifier, config: AttackConfig, clean, before, image_index, image_id,
           label, target, genes, found, generations, first_hit, seconds=0.0) -> AttackResult:
    """Paint each problem's final candidate on the host and classify it afresh.

    ``clean``/``before`` are the clean images and their probabilities, indexed by
    ``image_index``; the other arguments have one row per problem.
    """
    h, w, c = clean.shape[1:]
    pixels = codec.decode(genes, config.pixels, h, w, c)
    adv = codec.paint_numpy(clean[image_index], pixels)
    after = predict(classifier, adv)
    pb = before[image_index]
    rows = np.arange(len(image_index))
    pred_after = after.argmax(-1)
    adv_class = np.where(target >= 0, target, pred_after)
    return AttackResult(
        image_index=image_index, image_id=image_id, label=label, target=target,
        success=np.asarray(objective.success(after, label, target)), search_success=found,
        adversarial=adv, pixels=pixels, generations=generations,
        queries=config.population * (generations + 1),
        queries_to_hit=np.where(first_hit >= 0, config.population * (first_hit + 1), -1),
        clean_correct=pb.argmax(-1) == label, predicted_before=pb.argmax(-1),
        predicted_after=pred_after, adv_class=adv_class,
        prob_true_before=pb[rows, label], prob_true_after=after[rows, label],
        prob_adv_before=pb[rows, adv_class], prob_adv_after=after[rows, adv_class],
        num_classes=classifier.num_classes, config=config, seconds=seconds,
    )


def spec_of(config: AttackConfig, shape) -> SearchSpec:
    h, w, c = shape
    strategy = strategies.get(config.strategy, float(config.F), config.crossover)
    return SearchSpec(config.pixels, h, w, c, config.population, config.generations,
                      strategy, config.loss, config.early_stop)


def check_inputs(classifier, images, labels, config):
    """Validated ``(uint8 images, int32 labels)``; raises on anything off."""
    if not isinstance(config, AttackConfig):
        raise TypeError(f"config must be an AttackConfig, got {type(config).__name__}")
    if not isinstance(classifier, Classifier):
        raise TypeError(f"classifier must be a jaxattack.Classifier, got "
                        f"{type(classifier).__name__}")
    x = inputs.images(images)
    b, h, w, c = x.shape
    if classifier.input_shape is not None and tuple(classifier.input_shape) != (h, w, c):
        raise ValueError(f"images are {h}x{w}x{c} but the classifier expects "
                         f"{'x'.join(map(str, classifier.input_shape))}")
    if config.pixels > h * w:
        raise ValueError(f"pixels={config.pixels} exceeds the {h * w} pixels of a {h}x{w} image")
    return x, inputs.labels(labels, b, classifier.num_classes)


def clean_probs(classifier: Classifier, x: np.ndarray) -> np.ndarray:
    """Probabilities of the clean images, checked to be probabilities."""
    before = predict(classifier, x)
    inputs.probabilities(before, len(x), classifier.num_classes, classifier.outputs)
    return before


def attack(
    classifier: Classifier,
    images,
    labels,
    config: AttackConfig | None = None,
    targets=None,
    *,
    image_ids: Sequence[int] | np.ndarray | None = None,
    devices: int | Sequence[jax.Device] | None = None,
    progress: bool | None = None,
) -> AttackResult:
    """Attack ``images`` (uint8 ``[B, H, W, C]``) with a few-pixel DE search.

    Args:
      classifier: the black box; only its probabilities are used.
      images, labels: the clean images and their true classes.
      config: ``AttackConfig()`` (the paper's defaults) if None.
      targets: ``[B]`` target classes, only for ``mode='targeted'``.
      image_ids: ids that seed each image's randomness (default ``0..B-1``). The same
        (seed, id, config) gives the same result at any batch position or size.
      devices: devices to shard problems over (None: all local devices).
      progress: show a progress bar (None: when stderr is a terminal).

    Returns:
      An ``AttackResult`` with one row per problem: per image, or per image and
      target class for ``all-targets``.
    """
    config = AttackConfig() if config is None else config
    x, y = check_inputs(classifier, images, labels, config)
    ids = inputs.image_ids(image_ids, len(x))
    img_idx, tgt = problems(config.mode, y, targets, classifier.num_classes)
    if progress is None:
        progress = sys.stderr.isatty()

    start = time.perf_counter()
    before = clean_probs(classifier, x)
    mesh = make_mesh(devices)
    engine = Engine(spec_of(config, x.shape[1:]), classifier, mesh,
                    num_slots(config, len(img_idx), mesh))
    keys = problem_keys(config.seed, ids[img_idx], tgt)
    genes = np.zeros((len(img_idx), engine.spec.dims), np.float32)
    found = np.zeros(len(img_idx), bool)
    gens = np.zeros(len(img_idx), np.int64)
    first_hit = np.zeros(len(img_idx), np.int64)

    def collect(rows, g, f, n, h):
        genes[rows], found[rows], gens[rows], first_hit[rows] = g, f, n, h

    search(engine, keys, x[img_idx], y[img_idx], tgt, collect, progress)
    return verify(classifier, config, x, before, img_idx, ids[img_idx], y[img_idx], tgt,
                  genes, found, gens, first_hit, seconds=time.perf_counter() - start)
