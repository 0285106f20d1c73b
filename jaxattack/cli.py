"""``jaxattack`` command line: attack, sweep, eval, evaluate, report, repair, train, models.

Exit codes: 0 success, 1 a runtime error (one line on stderr), 2 bad usage,
130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
from pathlib import Path

DEMO_IMAGES = 20  # ~2 minutes for `tiny` on a 2-core CPU at the paper's budget


def _ints(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        msg = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return vals


def _names(text: str) -> list[str]:
    vals = [v.strip() for v in text.split(",") if v.strip()]
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one name")
    return vals


def _value(text: str, annotation: str):
    """``text`` as the type a field's annotation names (int, float, str, bool, X | None)."""
    kinds = [k.strip() for k in str(annotation).split("|")]
    if "None" in kinds and text.strip().lower() == "none":
        return None
    for kind, conv in (("bool", lambda t: {"true": True, "false": False}[t.lower()]),
                       ("int", int), ("float", float)):
        if kind in kinds:
            try:
                return conv(text)
            except (KeyError, ValueError):
                raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
    return text


def _config_options(p: argparse.ArgumentParser, sweep: bool) -> None:
    """One option per AttackConfig field, from its metadata (``attack.setting``); a sweep
    takes a comma list for the fields that have a ``sweep`` name."""
    from jaxattack.attack import AttackConfig

    for f in dataclasses.fields(AttackConfig):
        meta = f.metadata
        if f.name == "strategy_params":
            p.add_argument("--strategy-param", dest="strategy_params", action="append",
                           default=[], metavar="NAME=VALUE",
                           help=f"{meta['help']}; repeat for several. {_strategy_help()}")
            continue
        choices = meta["choices"]
        choices = tuple(choices() if callable(choices) else choices) if choices else None
        listed = sweep and meta["sweep"]
        flag = "--" + (meta["sweep"] if listed else f.name.replace("_", "-"))
        one = functools.partial(_value, annotation=f.type)
        if listed:
            default = list(meta["sweep_default"] or [f.default])
            kind = _ints if f.type == "int" else _names
            text = f"comma list: {meta['help']}" + (f"; of {', '.join(choices)}" if choices
                                                     else "")
            p.add_argument(flag, dest=f.name, type=kind, default=default,
                           help=f"{text} (default: {','.join(map(str, default))})")
        else:
            text = meta["help"] + ("" if "default" in meta["help"] else
                                   f" (default: {f.default})")
            p.add_argument(flag, dest=f.name, type=one, default=f.default, choices=choices,
                           metavar=None if choices else f.name.upper(), help=text)
    p.add_argument("--preset", choices=["default", "paper"], default="default",
                   help="'paper' is short for --early-stop paper (default: default)")


def _strategy_help() -> str:
    """Each strategy's own parameters with their defaults, from the registry."""
    from jaxattack import strategies

    parts = []
    for name in strategies.NAMES:
        fields = [f for f in strategies.param_fields(name) if f.name not in ("F", "CR")]
        if fields:
            parts.append(f"{name}: " + ", ".join(f"{f.name}={f.default} ({f.metadata['help']})"
                                                 for f in fields))
    return "Parameters: " + "; ".join(parts) + " (DE's F and CR: --F, --crossover)."


MODEL_OPTIONS = ("input_scale", "mean", "std", "layout")
DATA_OPTIONS = ("image_size", "resample")


def _source_options(p: argparse.ArgumentParser, images_default: int | None) -> None:
    """Data source and model-file options (attack, sweep, eval)."""
    p.add_argument("--data", default="sample",
                   help="'sample' (built in), a folder or .tar in split/label/*.jpg layout, a "
                        "folder holding train.tar/test.tar, tfds:NAME or tfds-folder:ROOT "
                        "(default: sample)")
    p.add_argument("--split", default="test", help="data split (default: test)")
    p.add_argument("--images", type=int, default=images_default,
                   help="number of images, taken round-robin over classes (default: "
                        f"{images_default or 'all'})")
    p.add_argument("--image-size", default=None, metavar="H[xW]",
                   help="resize every image to H x W (default: keep; mixed sizes need it)")
    p.add_argument("--resample", default=None, metavar="FILTER",
                   help="the PIL filter for --image-size: nearest, bilinear (default), "
                        "bicubic, lanczos, box, hamming")
    g = p.add_argument_group("input conventions of a model file (.keras, SavedModel, .onnx, "
                             ".pt); see docs/your_own_model.md")
    g.add_argument("--input-scale", default=None,
                   help="what the model takes: 255 / 0..255 or 1 / 0..1 (default: checked)")
    g.add_argument("--mean", default=None,
                   help="per-channel mean to subtract: a comma list, imagenet or cifar10")
    g.add_argument("--std", default=None, help="per-channel std to divide by, as --mean")
    g.add_argument("--layout", default=None, choices=["auto", "NHWC", "NCHW"],
                   help="the model's input layout (default: auto)")


def _options(args, names) -> dict:
    """The given ones of ``names`` among the parsed options."""
    out = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if "resample" in out and "image_size" not in out:
        raise ValueError("--resample needs --image-size")
    return out


def _common(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    _source_options(p, DEMO_IMAGES)
    _config_options(p, sweep)
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="split the CPU into this many JAX devices (default: 1; 2 speeds up "
                        "resnet20 and nin on 2 cores, see benchmarks/README.md)")
    p.add_argument("--save-images", choices=["none", "success", "all"], default="success",
                   help="which adversarial PNGs to save (default: success)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jaxattack", description=(
        "Few-pixel black-box attacks (Su, Vargas & Sakurai 2019) on image classifiers."))
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser("attack", help="attack one model with one setting, then report",
                       description="Attack one model with one setting; write the results "
                                   "store and the report into --out.")
    a.add_argument("--model", default="tiny",
                   help="zoo name (see `jaxattack models`) or path/to/file.py:function "
                        "returning a jaxattack.Classifier (default: tiny)")
    a.add_argument("--out", default=None,
                   help="run folder (default: runs/MODEL-kK-MODE, plus -STRATEGY, -LOSS, "
                        "-paper, -seedN when those are not the defaults)")
    _common(a)

    s = sub.add_parser("sweep", help="a grid of experiments into one resumable store",
                       description="Run a grid models x pixels x modes into one results "
                                   "store. Re-running the same command resumes.")
    s.add_argument("--models", type=_names, default=["tiny"],
                   help="comma list of models (default: tiny)")
    s.add_argument("--out", required=True, help="run folder")
    s.add_argument("--distributed", action="store_true",
                   help="join a multi-process job with jax.distributed (cluster read from "
                        "the environment unless the three options below are given)")
    s.add_argument("--coordinator", default=None, help="host:port of process 0")
    s.add_argument("--num-processes", type=int, default=None,
                   help="number of processes (with --distributed)")
    s.add_argument("--process-id", type=int, default=None,
                   help="this process's index (with --distributed)")
    _common(s, sweep=True)

    e = sub.add_parser("eval", help="clean accuracy of a model",
                       description="Clean accuracy of a model on a data source: the quick "
                                   "check that a model file's input conventions are right.")
    e.add_argument("--model", default="tiny",
                   help="zoo name, file.py:function or a model file (default: tiny)")
    _source_options(e, None)

    v = sub.add_parser("evaluate", help="robust accuracy per k from an ensemble of attacks",
                       description="Robust accuracy per k: the share of images classified "
                                   "correctly and fooled by no attack of the ensemble, run as "
                                   "a cascade (each attack only on the images still standing). "
                                   "Writes evaluation.json, evaluation.md, robust_accuracy.png "
                                   "and timing.json into --out; re-running resumes.")
    v.add_argument("--model", default="tiny",
                   help="zoo name, file.py:function or a model file (default: tiny)")
    v.add_argument("--out", required=True, help="run folder")
    _source_options(v, 100)
    v.add_argument("--pixels", type=_ints, default=[1, 3, 5, 10],
                   help="comma list of k (default: 1,3,5,10)")
    v.add_argument("--attacks", default=None,
                   help="comma list of attacks, each NAME or NAME:QUERIES, in cascade order "
                        "(default: learned-rs,sparse-rs,de,oracle; oracle runs at k = 1 only)")
    v.add_argument("--budget", type=int, default=10_000,
                   help="queries per image for each attack without its own (default: 10000)")
    v.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    v.add_argument("--batch-size", type=int, default=None,
                   help="problems searched together (default: chosen from the devices)")
    v.add_argument("--cpu-devices", type=int, default=None,
                   help="split the CPU into this many JAX devices (default: 1)")
    v.add_argument("--no-progress", action="store_true", help="hide progress bars")

    r = sub.add_parser("report", help="re-render tables and figures from a run folder")
    r.add_argument("run", help="run folder")

    fix = sub.add_parser("repair", help="move corrupt rows of a run folder aside",
                         description="Move every line of the run's results*.jsonl that is not "
                                     "a row (corrupt, or torn by a killed writer) to "
                                     "results*.quarantine.jsonl beside it; every good row "
                                     "stays. Then `sweep` and `report` read the folder again.")
    fix.add_argument("run", help="run folder")

    sub.add_parser("models", help="list zoo models with their recorded accuracy")
    sub.add_parser("train", help="train a zoo model (see `jaxattack train --help`)",
                   add_help=False)
    return ap


def _runtime_errors() -> tuple[type[Exception], ...]:
    """Errors shown as one line; only evaluated when one is raised (keeps flax off start-up)."""
    from jaxattack.models.weights import WeightsError
    from jaxattack.store import StoreLocked

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
    from jaxattack.store import QUARANTINE, repair

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
    from jaxattack import sweep
    from jaxattack.attack import AttackConfig

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
    from jaxattack import sweep

    exps = _experiments(args)
    out = (args.out or _default_out(args)) if args.command == "attack" else args.out
    lead = True
    if getattr(args, "distributed", False):
        from jaxattack import distributed

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
    from jaxattack import report
    from jaxattack.store import shard_paths

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
    from jaxattack import robust

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
    from jaxattack.sweep import load_classifier

    clf = load_classifier(args.model, **_options(args, MODEL_OPTIONS))
    x, y, _ = data.load(args.data, split=args.split, **_options(args, DATA_OPTIONS))
    sel = select_images(np.asarray(y), args.images)
    acc = float((predict(clf, x[sel]).argmax(-1) == np.asarray(y)[sel]).mean())
    print(f"{args.model} on {args.data}:{args.split} ({sel.size} images): "
          f"accuracy {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
