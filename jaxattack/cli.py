"""``jaxattack`` command line: attack, sweep, eval, evaluate, report, repair, train, models.

Exit codes: 0 success, 1 a runtime error (one line on stderr), 2 bad usage,
130 interrupted. The argument parser is built in ``cli_parser.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from jaxattack.cli_parser import (
    DATA_OPTIONS,
    DEMO_IMAGES,
    MODEL_OPTIONS,
    _options,
    _value,
    build_parser,
)

__all__ = ["DATA_OPTIONS", "DEMO_IMAGES", "MODEL_OPTIONS", "build_parser", "main"]


def _runtime_errors() -> tuple[type[Exception], ...]:
    """Errors shown as one line; only evaluated when one is raised (keeps flax off start-up)."""
    from jaxattack.data.store import StoreLocked
    from jaxattack.models.weights import WeightsError

    return (ValueError, TypeError, FileNotFoundError, KeyError, ImportError, OSError,
            WeightsError, StoreLocked)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports keras (tfds does)
    try:
        if argv[:1] == ["train"]:
            from jaxattack import train

            return train.main(argv[1:], prog="jaxattack train") or 0
        return _dispatch(build_parser().parse_args(argv))
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except _runtime_errors() as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"jaxattack: error: {msg}", file=sys.stderr)
        return 1


def _dispatch(args) -> int:
    for flag in ("images", "cpu_devices"):  # the counts any command may take
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if getattr(args, "cpu_devices", None) is not None:
        import jax

        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    if args.command == "models":
        return _models()
    if args.command == "eval":
        return _eval(args)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "report":
        return _report(Path(args.run))
    if args.command == "repair":
        return _repair(Path(args.run))
    return _attack_or_sweep(args)


def _repair(run: Path) -> int:
    from jaxattack.data.store import QUARANTINE, repair

    moved = repair(run)
    if not moved:
        raise FileNotFoundError(f"no results.jsonl (or results.p*.jsonl shards) in {run}")
    for name, n in moved.items():
        where = name[: -len(".jsonl")] + QUARANTINE
        print(f"{name}: moved {n} bad line(s) to {where}" if n else f"{name}: no bad lines")
    return 0


def _strategy_params(items: list[str], names: list[str]) -> dict[str, dict]:
    """``--strategy-param NAME=VALUE`` items as parameters per strategy: each strategy of
    ``names`` takes the ones it declares; one no strategy declares is an error."""
    from jaxattack import strategies

    out = {name: {} for name in names}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--strategy-param takes NAME=VALUE, got {item!r}")
        taken = False
        for name in names:
            fields = {f.name: f for f in strategies.param_fields(name)}
            if key in fields:
                try:
                    out[name][key] = _value(text, fields[key].type)
                except argparse.ArgumentTypeError as e:
                    raise ValueError(f"--strategy-param {key}: {e}") from None
                taken = True
        if not taken:
            have = sorted({f.name for n in names for f in strategies.param_fields(n)})
            raise ValueError(f"no strategy of {', '.join(names)} has a parameter {key!r}"
                             + (f" (they have: {', '.join(have)})" if have else ""))
    return out


def _experiments(args) -> list:
    """The experiments of an ``attack`` or ``sweep`` command."""
    from jaxattack.runs import sweep
    from jaxattack.runs.attack import AttackConfig

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(AttackConfig)}
    del values["batch_size"]  # a run setting (sweep.run's), not part of an experiment
    if args.preset == "paper":
        if values["early_stop"] not in ("success", "paper"):
            raise ValueError(f"--preset paper conflicts with --early-stop {values['early_stop']}")
        values["early_stop"] = "paper"
    names = values["strategy"] if args.command == "sweep" else [values["strategy"]]
    params = _strategy_params(values.pop("strategy_params"), names)
    models = args.models if args.command == "sweep" else [args.model]
    if args.command == "attack":
        values = {k: [v] for k, v in values.items()}  # one cell
    exps = sweep.grid(models, data=args.data, split=args.split,
                      model_options=_options(args, MODEL_OPTIONS),
                      data_options=_options(args, DATA_OPTIONS), **values)
    return [dataclasses.replace(e, config=e.config.replace(
        strategy_params=params[e.config.strategy])) for e in exps]


def _attack_or_sweep(args) -> int:
    from jaxattack.runs import sweep

    exps = _experiments(args)
    out = (args.out or _default_out(args)) if args.command == "attack" else args.out
    lead = True
    if getattr(args, "distributed", False):
        from jaxattack.runs import distributed

        lead = distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                                      cpu_collectives="gloo")[0] == 0
    else:
        for flag in ("coordinator", "num_processes", "process_id"):
            if getattr(args, flag, None) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} needs --distributed")
    store = sweep.run(exps, out, args.images, save_images=args.save_images,
                      batch_size=args.batch_size, progress=not args.no_progress)
    if getattr(args, "distributed", False):
        distributed.barrier()
    return _report(store.root, only={e.id for e in exps}) if lead else 0


def _default_out(args) -> str:
    """runs/MODEL-kK-MODE, with whatever else differs from the defaults appended."""
    parts = [Path(args.model.split(":")[0]).stem, f"k{args.pixels}", args.mode]
    parts += [v for v, d in ((args.strategy, "de"), (args.loss, "prob"),
                             (args.preset, "default")) if v != d]
    parts += [f"seed{args.seed}"] if args.seed else []
    return "runs/" + "-".join(parts)


def _report(run: Path, only: set[str] | None = None) -> int:
    """Write the run's report; print its table (``only``: of these experiments)."""
    from jaxattack.data.store import shard_paths
    from jaxattack.reports import report

    if not shard_paths(run):
        raise FileNotFoundError(f"no results.jsonl (or results.p*.jsonl shards) in {run}")
    summary = report.write_report(run)
    aggregates = summary["aggregates"]
    if only is not None:  # a reused folder may hold other experiments (seeds, settings)
        rows, _ = report.unique_rows(report.load_rows(run))
        mine = [r for r in rows if r["experiment"] in only]
        aggregates = report.aggregate(mine)
    print(report.table(aggregates))
    if only is not None and len(mine) < len(rows):
        print(f"\n(this command's experiments only; {len(rows) - len(mine)} more stored rows "
              f"of other experiments are in the report)")
    print(f"\nreport: {run / 'report.md'}")
    return 0


def _models() -> int:
    from jaxattack import models

    print(f"{'name':<10} {'weights':<8} {'test acc':>8}  description")
    for name, card in models.available().items():
        acc = card.get("test_accuracy")
        print(f"{name:<10} {'shipped' if card['weights_shipped'] else 'none':<8} "
              f"{f'{acc:.2%}' if acc is not None else '-':>8}  {card['description']}")
    return 0


def _evaluate(args) -> int:
    from jaxattack.runs import robust

    result = robust.evaluate(
        args.model, args.data, out=args.out, images=args.images, ks=args.pixels,
        attacks=args.attacks or robust.DEFAULT_ENSEMBLE, budget=args.budget, seed=args.seed,
        split=args.split, model_options=_options(args, MODEL_OPTIONS),
        data_options=_options(args, DATA_OPTIONS), batch_size=args.batch_size,
        progress=not args.no_progress)
    print((Path(args.out) / "evaluation.md").read_text())
    print("robust accuracy: " + ", ".join(f"k={k} {v:.1%}"
                                          for k, v in result["robust_accuracy"].items()))
    return 0


def _eval(args) -> int:
    import numpy as np

    from jaxattack import data
    from jaxattack.classifier import predict
    from jaxattack.data import select_images
    from jaxattack.runs.sweep import load_classifier

    clf = load_classifier(args.model, **_options(args, MODEL_OPTIONS))
    x, y, _ = data.load(args.data, split=args.split, **_options(args, DATA_OPTIONS))
    sel = select_images(np.asarray(y), args.images)
    acc = float((predict(clf, x[sel]).argmax(-1) == np.asarray(y)[sel]).mean())
    print(f"{args.model} on {args.data}:{args.split} ({sel.size} images): "
          f"accuracy {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
