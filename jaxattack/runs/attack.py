"""``AttackConfig`` (every attack setting, declared once) and ``attack()``."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxattack import engine, strategies
from jaxattack.classifier import Classifier
from jaxattack.engine.sharding import make_mesh
from jaxattack.pixels import inputs, objective, problems
from jaxattack.pixels.evaluation import FORWARDS, evaluator
from jaxattack.pixels.result import AttackResult
from jaxattack.pixels.verify import Collector, verify
from jaxattack.strategies import codec

MODES = problems.MODES


def setting(default, help: str, *, choices=None, sweep: str | None = None, sweep_default=None,
            stored: bool = True, new: bool = False):
    """A config field with its documentation; the CLI and the reports read the metadata.

    ``choices``: allowed values (a tuple, or a callable returning one); ``sweep``: the
    plural option under which ``jaxattack sweep`` takes a comma list of values;
    ``stored``: part of an experiment's identity and of every stored row (``batch_size``
    changes only speed, so it is not); ``new``: added after 0.1.0, so left out of the
    identity while at its default (run folders written before keep their ids).
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "sweep": sweep, "sweep_default": sweep_default,
        "stored": stored, "new": new})


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """Attack settings. The defaults are the paper's (Su et al., 2019); each field's
    ``metadata["help"]`` documents it (``jaxattack attack --help`` shows them all)."""

    pixels: int = setting(1, "pixels changed, k", sweep="pixels", sweep_default=(1, 3, 5))
    population: int = setting(400, "candidates per generation (the DE population)")
    generations: int = setting(100, "generations at most after the initial population; a "
                                    "problem costs at most population x (generations + 1) "
                                    "queries")
    mode: str = setting("untargeted", "untargeted, targeted (one target class per image; the "
                                      "CLI draws one pseudo-random other class per image, "
                                      "fixed by seed and image id) or all-targets (each image "
                                      "toward every other class)", choices=MODES,
                        sweep="modes")
    seed: int = setting(0, "random seed; with the image id, the only source of randomness")
    F: float = setting(0.5, "DE mutation scale, for the DE strategies (the paper: 0.5)")
    crossover: float | None = setting(None, "binomial crossover rate of the DE strategies "
                                            "(default: none, the paper's; de-bin: 0.5)")
    early_stop: str = setting("success", "stop a problem on success, on the paper's thresholds "
                                         "(targeted p > 0.5, untargeted p_true < 0.05), or "
                                         "never", choices=objective.EARLY_STOPS)
    batch_size: int | None = setting(None, "problems searched together over all devices "
                                           "(default: chosen from the devices)", stored=False)
    strategy: str = setting("de", "search strategy (de is the paper's)",
                            choices=lambda: strategies.NAMES, sweep="strategies")
    loss: str = setting("prob", "fitness: the paper's class probability, or the margin to "
                                "the best other class", choices=objective.LOSSES)
    strategy_params: Any = setting((), "the strategy's own parameters as NAME=VALUE (see "
                                       "jaxattack.strategies)", new=True)
    forward: str = setting("auto", "how candidates are classified: dense (the whole painted "
                                   "image), sparse (only what the k pixels reach; the same "
                                   "probabilities to float rounding) or auto (sparse where "
                                   "the model declares its layers and it is modelled faster)",
                           choices=FORWARDS, new=True)

    def __post_init__(self):
        def need(ok, msg):
            if not ok:
                raise ValueError(msg)

        for f in ("pixels", "population", "generations", "seed"):
            v = getattr(self, f)
            if not isinstance(v, int | np.integer) or isinstance(v, bool):
                raise TypeError(f"{f} must be an int, got {v!r}")
        for f in dataclasses.fields(self):
            choices = f.metadata["choices"]
            choices = choices() if callable(choices) else choices
            need(choices is None or getattr(self, f.name) in choices,
                 f"{f.name} must be one of {tuple(choices or ())}, got {getattr(self, f.name)!r}")
        need(self.pixels >= 1, f"pixels must be >= 1, got {self.pixels}")
        need(self.generations >= 0, f"generations must be >= 0, got {self.generations}")
        need(0 <= self.seed < 2**32, f"seed must lie in [0, 2**32), got {self.seed}")
        need(self.batch_size is None or self.batch_size >= 1,
             f"batch_size must be None or >= 1, got {self.batch_size}")
        cls = strategies.get(self.strategy)
        need(self.population >= cls.min_population,
             f"population must be >= {cls.min_population} for {self.strategy}, got "
             f"{self.population}")
        params = self.strategy_params
        if isinstance(params, Mapping):
            params = params.items()
        object.__setattr__(self, "strategy_params", tuple(sorted(
            (str(k), v) for k, v in params)))
        strategies.make_params(self.strategy, self.strategy_values())  # checks them

    @classmethod
    def paper(cls, **overrides) -> AttackConfig:
        """The paper's setting, including its probability-threshold early stop."""
        return cls(**{"early_stop": "paper", **overrides})

    @property
    def max_queries(self) -> int:
        return self.population * (self.generations + 1)

    def replace(self, **changes) -> AttackConfig:
        return dataclasses.replace(self, **changes)

    def strategy_values(self) -> dict[str, Any]:
        """The strategy's parameters: ``strategy_params`` plus ``F``/``crossover`` for the
        strategies that have them (``F`` and ``CR``)."""
        values = dict(self.strategy_params)
        names = {f.name for f in strategies.param_fields(self.strategy)}
        for short, name in (("F", "F"), ("crossover", "CR")):
            given = getattr(self, short)
            if name in values:
                raise ValueError(f"set {name} with AttackConfig({short}=...) (--{short}), not "
                                 f"in strategy_params")
            if name in names:
                if given is not None:
                    values[name] = given
            elif given != _DEFAULTS[short]:
                raise ValueError(f"{short} does not apply to strategy {self.strategy!r}")
        return values

    def identity(self, new: bool | None = None) -> dict[str, Any]:
        """The stored fields that define an experiment, as stored (see ``setting``).
        ``new=True``: only the fields added after 0.1.0, even at their defaults."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if new is not None:
                keep = f.metadata["new"] == new
            else:
                keep = not (f.metadata["new"] and value == f.default)
            if f.metadata["stored"] and keep:
                out[f.name] = dict(value) if f.name == "strategy_params" else value
        return out

    def search(self, classifier: Classifier, image_shape) -> engine.Search:
        """The engine's search for images of ``image_shape`` (H, W, C)."""
        space = codec.PixelSpace(self.pixels, *image_shape)
        strategy = strategies.build(self.strategy, space, self.population, self.generations,
                                    self.strategy_values())
        return engine.Search(strategy, evaluator(classifier, space, self.loss, self.early_stop,
                                                 self.forward, self.population))


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(AttackConfig)}


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
    """Attack ``images`` (uint8 ``[B, H, W, C]``) with a few-pixel black-box search.

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
    if not isinstance(config, AttackConfig):
        raise TypeError(f"config must be an AttackConfig, got {type(config).__name__}")
    x, y = inputs.attack_inputs(classifier, images, labels, config.pixels)
    ids = inputs.image_ids(image_ids, len(x))
    img_idx, tgt = problems.rows(config.mode, y, targets, classifier.num_classes)
    progress = sys.stderr.isatty() if progress is None else progress

    start = time.perf_counter()
    before = inputs.clean_probs(classifier, x)
    mesh = make_mesh(devices)
    search = config.search(classifier, x.shape[1:])
    out = Collector(len(img_idx), search.strategy.dims)
    engine.run(search, classifier.params, problems.keys(config.seed, ids[img_idx], tgt),
               problems.image_problems(x, y, img_idx, tgt), out, mesh=mesh,
               num_slots=engine.default_slots(config.population, len(img_idx), mesh,
                                              config.batch_size,
                                              search.evaluate.bytes_per_candidate()),
               progress=progress, counted=before.argmax(-1)[img_idx] == y[img_idx])
    done = out.finished(img_idx, ids[img_idx], y[img_idx], tgt)
    return verify(classifier, config, x, before, done, seconds=time.perf_counter() - start)
