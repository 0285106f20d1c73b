"""The engine alone: scheduling, early stop, refill, padding, utilisation and sharding,
with toy evaluation functions and no classifier."""

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattack import engine, strategies
from jaxattack.engine import sizing
from jaxattack.engine.sharding import make_mesh
from jaxattack.strategies.codec import PixelSpace
from tests import toys

SPACE = PixelSpace(1, 4, 4, 3)  # 5 genes


@dataclasses.dataclass(frozen=True)
class Clock(strategies.Strategy):
    """Proposes candidates whose genes all equal the generation (0 = initial)."""

    name: ClassVar[str] = "clock"

    def init(self, key):
        return jnp.zeros((), jnp.int32)

    def ask(self, key, state, generation):
        return jnp.full((self.population, self.dims), generation, jnp.float32), None

    def tell(self, state, candidates, pending, fitness, generation):
        return generation

    def best(self, state):
        return jnp.full(self.dims, state, jnp.float32)


class StopAt(NamedTuple):
    stop_at: np.ndarray  # int32: the generation after which the problem stops
    hit_at: np.ndarray  # int32: the generation whose candidates succeed (-1 never)


@dataclasses.dataclass(frozen=True)
class StopAtEvaluator:
    """Fitness = the generation; a hit at ``hit_at``, a stop after ``stop_at``."""

    def prepare(self, params, problems):
        return problems

    def __call__(self, params, problems, candidates):
        g = candidates[..., 0]  # [S, N]
        hit = g == problems.hit_at[:, None].astype(jnp.float32)
        return engine.Evaluation(params["scale"] * g, hit,
                                 g[:, 0] >= problems.stop_at.astype(jnp.float32))


class Goal(NamedTuple):
    goal: np.ndarray  # f32 [D]


@dataclasses.dataclass(frozen=True)
class GoalEvaluator:
    """Distance of each candidate to the problem's goal; stop within 0.5 of it."""

    def prepare(self, params, problems):
        return problems

    def __call__(self, params, problems, candidates):
        d = jnp.abs(candidates - problems.goal[:, None]).sum(-1)
        return engine.Evaluation(d, d < 0.5, (d < 0.5).any(-1))


@dataclasses.dataclass(frozen=True)
class HitFromParams(StopAtEvaluator):
    """A hit at the generation ``params["hit_at"]``."""

    def __call__(self, params, problems, candidates):
        ev = super().__call__(params, problems, candidates)
        return ev._replace(hit=candidates[..., 0] == params["hit_at"])


@dataclasses.dataclass(frozen=True)
class SeenSizes:
    """Distance to the goal, a hit (and a stop) within 150 of it; records the candidates
    per slot of every traced call."""

    seen: ClassVar[set] = set()

    def prepare(self, params, problems):
        return problems

    def __call__(self, params, problems, candidates):
        SeenSizes.seen.add(candidates.shape[1])
        d = jnp.abs(candidates - problems.goal[:, None]).sum(-1)
        return engine.Evaluation(d, d < 150, (d < 150).any(-1))


def _run(search, problems, keys, devices=1, slots=2, refill=True, shrink=False, chunk=None,
         block=None):
    out = {}

    def on_finished(rows, genes, found, generations, first_hit):
        for i, r in enumerate(rows):
            assert r not in out, "a problem finished twice"
            out[int(r)] = (genes[i].tolist(), bool(found[i]), int(generations[i]),
                           int(first_hit[i]))

    stats = engine.run(search, {"scale": jnp.float32(1.0)}, keys, problems, on_finished,
                       mesh=make_mesh(devices), num_slots=slots, refill=refill,
                       shrink=shrink, chunk=chunk, block=block)
    return out, stats


def _clock(generations=6, population=3):
    return engine.Search(Clock(SPACE, population, generations), StopAtEvaluator())


def _stop_at_problems(n, seed=0):
    rng = np.random.default_rng(seed)
    stop = rng.integers(0, 9, n).astype(np.int32)  # some beyond the budget of 6
    hit = np.where(rng.random(n) < 0.5, rng.integers(0, 5, n), -1).astype(np.int32)
    return StopAt(stop, hit), np.zeros((n, 2), np.uint32)


def test_known_generations_hits_and_queries():
    problems, keys = _stop_at_problems(11)
    out, stats = _run(_clock(), problems, keys, slots=3)
    assert sorted(out) == list(range(11))  # every problem once, none lost in padding
    for i, (genes, found, gens, first_hit) in out.items():
        assert gens == min(problems.stop_at[i], 6)  # early stop, or the budget
        ran = problems.hit_at[i] >= 0 and problems.hit_at[i] <= gens
        assert found == ran and first_hit == (problems.hit_at[i] if ran else -1)
        # the best successful candidate, else the strategy's best (the last generation)
        assert genes == [float(problems.hit_at[i] if ran else gens)] * 5
    assert stats.useful == sum(g + 1 for _, _, g, _ in out.values())  # queries / population
    assert stats.problems == 11 and 0 < stats.utilisation <= 1


def test_the_bar_counts_hits_only_among_counted_problems(capsys):
    problems, keys = _stop_at_problems(11)
    counted = np.arange(11) % 3 != 0  # e.g. the images the model already gets wrong
    out = {}

    def on_finished(rows, genes, found, generations, first_hit):
        out.update(zip(rows.tolist(), found.tolist(), strict=True))

    engine.run(_clock(), {"scale": jnp.float32(1.0)}, keys, problems, on_finished,
               mesh=make_mesh(1), num_slots=3, progress=True, counted=counted)
    hits = sum(out[i] for i in range(11) if counted[i])
    assert sum(out.values()) > hits  # an uncounted problem was a hit: the test can fail
    last = capsys.readouterr().err.split("\r")[-1]
    assert f"hits={hits}/{counted.sum()}" in last, last


def test_fixed_batches_compute_a_known_amount_and_refill_computes_less():
    problems, keys = _stop_at_problems(12, seed=1)
    fixed, s_fixed = _run(_clock(), problems, keys, slots=4, refill=False)
    cont, s_cont = _run(_clock(), problems, keys, slots=4, refill=True)
    assert fixed == cont
    evaluated = np.minimum(problems.stop_at, 6) + 1
    assert s_fixed.computed == sum(4 * evaluated[i:i + 4].max() for i in range(0, 12, 4))
    assert s_cont.useful == s_fixed.useful == evaluated.sum()
    assert s_cont.computed < s_fixed.computed


@pytest.mark.parametrize("devices,slots", toys.fast_only(
    [(1, 1), (1, 5), (2, 2), (2, 6), (8, 8), (8, 16)], set()))
def test_results_do_not_depend_on_slots_devices_or_order(devices, slots):
    """A random strategy on goal problems: per-problem keys make every result the same
    whatever the batching, and the same as the problem alone."""
    n = 13
    goals = np.random.default_rng(2).uniform(0, 4, (n, 5)).astype(np.float32)
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(0), n))
    search = engine.Search(strategies.build("de", SPACE, 8, 5), GoalEvaluator())
    ref, _ = _run(search, Goal(goals), keys)
    got, _ = _run(search, Goal(goals), keys, devices=devices, slots=slots)
    assert got == ref
    perm = np.random.default_rng(3).permutation(n)
    moved, _ = _run(search, Goal(goals[perm]), keys[perm], devices=devices, slots=slots)
    assert {int(perm[i]): v for i, v in moved.items()} == ref
    alone, _ = _run(search, Goal(goals[4:5]), keys[4:5], slots=1)
    assert alone[0] == ref[4]


def test_params_reach_the_evaluation_function_without_recompiling():
    """The same search with other params (the model's weights) runs the same program."""
    problems, keys = _stop_at_problems(4)
    problems = problems._replace(stop_at=np.full(4, 9, np.int32), hit_at=np.full(4, -1, np.int32))
    search = engine.Search(Clock(SPACE, 3, 6), HitFromParams())
    first, misses = {}, []
    for at in (2, 4):
        def keep(rows, genes, found, gens, first_hit, at=at):
            first[at] = first_hit.tolist()
        engine.run(search, {"scale": jnp.float32(1), "hit_at": jnp.float32(at)}, keys,
                   problems, keep, mesh=make_mesh(1), num_slots=4)
        misses.append(engine._programs.cache_info().misses)
    assert misses[0] == misses[1]  # no new program for new params
    assert first[2] == [2] * 4 and first[4] == [4] * 4


def test_empty_queue_runs_nothing():
    stats = engine.run(_clock(), {"scale": jnp.float32(1)}, np.zeros((0, 2), np.uint32),
                       StopAt(np.zeros(0, np.int32), np.zeros(0, np.int32)),
                       lambda *a: pytest.fail("nothing to finish"), mesh=make_mesh(1),
                       num_slots=2)
    assert stats.problems == stats.computed == 0


def test_a_generation_needs_no_communication():
    import re

    problems, _ = _stop_at_problems(16)
    eng = engine.Engine(_clock(), {"scale": jnp.float32(1)}, make_mesh(8), 16, problems)
    hlo = eng._evolve.lower(eng.slots, eng.params, np.int32(1),
                            np.int32(1)).compile().as_text()
    assert "while" in hlo
    assert not re.search(r"all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter",
                         hlo)


def test_default_slots():
    one = make_mesh(1)
    assert engine.default_slots(400, 100, one) == 1  # CPU: one population per device
    assert engine.default_slots(20, 100, one) == 20
    assert engine.default_slots(20, 3, one) == 3  # never more slots than problems
    assert engine.default_slots(400, 100, make_mesh(8), batch_size=5) == 8  # device multiple


def test_ladder_of_slot_counts():
    assert engine.ladder(20, 1) == [1, 2, 3, 4, 6, 8, 12, 16, 20]
    assert engine.ladder(48, 2) == [2, 4, 6, 8, 12, 16, 24, 32, 48]
    assert engine.ladder(16, 8) == [8, 16] and engine.ladder(1, 1) == [1]


@pytest.mark.parametrize("devices", toys.fast_only([1, 2], {1}))
def test_the_tail_shrinks_without_changing_any_result(devices):
    """20 problems, 16 done after 3 generations and 4 searching to the end of a budget of
    100: without shrinking 16 of 20 slots are carried along for 98 generations."""
    stop = np.full(20, 2, np.int32)
    stop[[3, 11, 12, 18]] = 999
    problems = StopAt(stop, np.where(np.arange(20) % 4 == 0, 1, -1).astype(np.int32))
    keys = np.zeros((20, 2), np.uint32)
    search = _clock(generations=100, population=2)
    runs = {policy: _run(search, problems, keys, devices=devices, slots=20, shrink=policy,
                         chunk=20) for policy in (False, True, "auto")}
    assert runs[True][0] == runs[False][0] == runs["auto"][0]  # every problem's result
    useful = 16 * 3 + 4 * 101
    assert runs[False][1].useful == runs[True][1].useful == useful
    assert runs[False][1].computed == 20 * 101 and runs[False][1].resized == 0
    assert runs[True][1].resized >= 1 and runs[True][1].utilisation >= 0.9


def _tail_problems():
    stop = np.full(20, 2, np.int32)
    stop[[3, 11, 12, 18]] = 999
    problems = StopAt(stop, np.where(np.arange(20) % 4 == 0, 1, -1).astype(np.int32))
    return problems, np.arange(40, dtype=np.uint32).reshape(20, 2)


@pytest.mark.parametrize("devices", [1, 2])
def test_chunked_evaluation_skips_finished_problems_without_changing_any_result(devices):
    """The same tail evaluated 1 or 2 slots per call: the program evaluates only chunks
    holding an active slot, so with 1 slot per call every forward pass is useful; the
    results are those of evaluating every slot."""
    problems, keys = _tail_problems()
    search = _clock(generations=100, population=2)
    whole = _run(search, problems, keys, devices=devices, slots=20, chunk=20)
    one = _run(search, problems, keys, devices=devices, slots=20, chunk=1)
    two = _run(search, problems, keys, devices=devices, slots=20, chunk=2, shrink=True)
    assert one[0] == two[0] == whole[0]
    useful = 16 * 3 + 4 * 101
    assert one[1].useful == two[1].useful == whole[1].useful == useful
    assert one[1].computed == useful and whole[1].computed == 20 * 101
    # 2 slots per call: at most one idle slot per device and generation; a chunked
    # engine never moves its tail (it has nothing to save)
    assert useful <= two[1].computed <= useful + devices * 101 and two[1].resized == 0


@pytest.mark.parametrize("chunk", toys.fast_only([1, 8], set()))
def test_a_population_evaluated_in_blocks_gives_the_same_results(chunk):
    """A population of 8 in calls of at most 3 candidates (3 + 3 + 2, the last padded):
    every call sees 3 candidates, and every result (early stops included) is that of
    whole populations, with slots evaluated one or all per call."""
    n = 13
    goals = np.random.default_rng(2).uniform(0, 4, (n, 5)).astype(np.float32)
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(0), n))
    search = engine.Search(strategies.build("de", SPACE, 8, 5), SeenSizes())
    SeenSizes.seen.clear()
    whole, _ = _run(search, Goal(goals), keys, slots=8, chunk=chunk, block=8)
    assert SeenSizes.seen == {8}
    SeenSizes.seen.clear()
    blocked, stats = _run(search, Goal(goals), keys, slots=8, chunk=chunk, block=3)
    assert SeenSizes.seen == {3}
    found = [f for _, f, _, _ in whole.values()]
    assert blocked == whole and any(found) and not all(found)
    assert stats.useful == sum(g + 1 for _, _, g, _ in whole.values())


def test_default_block_splits_populations_only_on_listed_platforms(monkeypatch):
    mesh = make_mesh(1)
    assert engine.default_block(mesh, 400) == sizing.BLOCK_CANDIDATES["cpu"]
    assert engine.default_block(mesh, 20) >= 20  # a small population in one call
    monkeypatch.setattr(sizing, "BLOCK_CANDIDATES", {})  # a platform not listed
    assert engine.default_block(mesh, 400) == 400  # the whole population per call


def test_active_slots_first_in_slot_order():
    """The chunked evaluation's order: a stable argsort of the inactive flags."""
    from jaxattack.engine.slots import _active_first
    rng = np.random.default_rng(0)
    for size in (1, 2, 5, 20, 33):
        for share in (0.0, 0.3, 0.9, 1.0):
            active = rng.random(size) < share
            np.testing.assert_array_equal(_active_first(jnp.asarray(active)),
                                          np.argsort(~active, kind="stable"))


def test_default_chunk_holds_enough_candidates_and_divides_the_slots():
    mesh = make_mesh(1)
    assert engine.default_chunk(mesh, population=20, num_slots=20) == 1
    assert engine.default_chunk(mesh, population=400, num_slots=1) == 1
    assert engine.default_chunk(mesh, population=8, num_slots=20) == 4  # 3 does not divide
    assert engine.default_chunk(mesh, population=2, num_slots=12) == 12
    assert engine.default_chunk(make_mesh(2), population=4, num_slots=20) == 5


def test_auto_builds_smaller_engines_only_when_the_saving_outweighs_compiling():
    sizes = engine.ladder(20, 1)

    def build(seconds):
        return lambda n: seconds

    # 3 problems: the size that holds them (3) and the next move's (2). 17 slots x 98
    # generations x 1 ms saved vs a 0.1 s compile: build both
    assert engine._tail_sizes(3, 20, sizes, "auto", 98, 1e-3, build(0.1)) == [3, 2]
    # 2 generations left: not worth a 1 s compile, but worth a compiled program
    assert engine._tail_sizes(3, 20, sizes, "auto", 2, 1e-3, build(1.0)) == []
    assert engine._tail_sizes(3, 20, sizes, "auto", 2, 1e-3, build(0.0)) == [3, 2]
    assert engine._tail_sizes(3, 20, sizes, True, 2, 1e-3, build(1.0)) == [3, 2]
    assert engine._tail_sizes(3, 20, sizes, False, 98, 1e-3, build(0.0)) == []
    assert engine._tail_sizes(3, 20, sizes, "auto", 98, None, build(0.0)) == []  # unmeasured
    assert engine._tail_sizes(19, 20, sizes, True, 98, 1e-3, build(0.0)) == [16]  # next move
    assert engine._tail_sizes(1, 20, sizes, True, 98, 1e-3, build(0.0)) == [1]
    # the saving counts per size: 4 slots x 50 generations x 1 ms on the way to 16 is
    # worth a 0.09 s compile, not a 0.15 s one; 8 slots' (to 12) is worth both
    assert engine._tail_sizes(13, 20, sizes, "auto", 50, 1e-3, build(0.09)) == [16, 12]
    assert engine._tail_sizes(13, 20, sizes, "auto", 50, 1e-3, build(0.15)) == [12]


def test_default_slots_fit_the_memory_budget(monkeypatch):
    monkeypatch.setattr(sizing, "memory_budget", lambda device: 10**9)
    one = make_mesh(1)
    assert engine.default_slots(20, 1000, one, bytes_per_candidate=10**7) == 5  # 100 cands
    assert engine.default_slots(400, 1000, one, bytes_per_candidate=10**8) == 1  # at least 1
    assert engine.default_slots(20, 1000, one, bytes_per_candidate=10**3) == 20  # the rule


def test_the_memory_estimate_grows_with_the_image():
    import jaxattack as ja
    from tests import toys

    clf = toys.small_cnn()
    dense = ja.AttackConfig(forward="dense")
    small, large = (dense.search(clf, (h, h, 3)).evaluate.bytes_per_candidate()
                    for h in (32, 224))
    assert 40 < large / small < 60  # (224 / 32)^2 = 49: activations scale with the pixels
    # the largest per-image value of the small CNN is its first conv's output, 8 x H x W f32
    assert small == 32 * 32 * 3 + 3 * 32 * 32 * 8 * 4
