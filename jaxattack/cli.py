"""``jaxattack`` command line: attack, sweep, eval, report, train, models.

Exit codes: 0 success, 1 a runtime error (one line on stderr), 2 bad usage,
130 interrupted.
"""

from __future__ import annotations

import argparse
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


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="sample",
                   help="'sample' (built in), a folder or .tar in split/label/*.jpg layout, a "
                        "folder holding train.tar/test.tar, tfds:NAME or tfds-folder:ROOT "
                        "(default: sample)")
    p.add_argument("--split", default="test", help="data split (default: test)")
    p.add_argument("--images", type=int, default=DEMO_IMAGES,
                   help=f"number of images, taken round-robin over classes "
                        f"(default: {DEMO_IMAGES})")
    p.add_argument("--population", type=int, default=400, help="DE population (default: 400)")
    p.add_argument("--generations", type=int, default=100,
                   help="DE generations at most (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--F", type=float, default=0.5,
                   help="DE mutation factor (default: 0.5, the paper's)")
    p.add_argument("--crossover", type=float, default=None,
                   help="binomial crossover rate, for de-bin (default: none, the paper's)")
    p.add_argument("--preset", choices=["default", "paper"], default="default",
                   help="'paper' stops on the paper's probability thresholds (targeted p>0.5, "
                        "untargeted p_true<0.05) instead of on first success (default: default)")
    p.add_argument("--loss", choices=["prob", "margin"], default="prob",
                   help="fitness: 'prob' (the paper's class probability) or 'margin' "
                        "(probability gap to the best other class)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="problems searched together (default: chosen from the devices)")
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
    a.add_argument("--pixels", type=int, default=1, help="pixels changed, k (default: 1)")
    a.add_argument("--mode", choices=["untargeted", "targeted", "all-targets"],
                   default="untargeted",
                   help="attack mode (default: untargeted); targeted attacks one "
                        "pseudo-random other class per image, fixed by seed and image id")
    a.add_argument("--strategy", default="de",
                   help="de (the paper's, default), de-bin, de-best, de-ctb, jde or sparse-rs")
    a.add_argument("--out", default=None,
                   help="run folder (default: runs/MODEL-kK-MODE, plus -STRATEGY, -LOSS, "
                        "-paper, -seedN when those are not the defaults)")
    _common(a)

    s = sub.add_parser("sweep", help="a grid of experiments into one resumable store",
                       description="Run a grid models x pixels x modes into one results "
                                   "store. Re-running the same command resumes.")
    s.add_argument("--models", type=_names, default=["tiny"],
                   help="comma list of models (default: tiny)")
    s.add_argument("--pixels", type=_ints, default=[1, 3, 5],
                   help="comma list of k (default: 1,3,5)")
    s.add_argument("--modes", type=_names, default=["untargeted"],
                   help="comma list of untargeted, targeted (one pseudo-random other class "
                        "per image), all-targets (default: untargeted)")
    s.add_argument("--strategies", type=_names, default=["de"],
                   help="comma list of de, de-bin, de-best, de-ctb, jde, sparse-rs "
                        "(default: de, the paper's)")
    s.add_argument("--out", required=True, help="run folder")
    s.add_argument("--distributed", action="store_true",
                   help="join a multi-process job with jax.distributed (cluster read from "
                        "the environment unless the three options below are given)")
    s.add_argument("--coordinator", default=None, help="host:port of process 0")
    s.add_argument("--num-processes", type=int, default=None,
                   help="number of processes (with --distributed)")
    s.add_argument("--process-id", type=int, default=None,
                   help="this process's index (with --distributed)")
    _common(s)

    e = sub.add_parser("eval", help="clean accuracy of a model")
    e.add_argument("--model", default="tiny", help="zoo name or file.py:function (default: tiny)")
    e.add_argument("--data", default="sample", help="data source, as for attack (default: sample)")
    e.add_argument("--split", default="test", help="data split (default: test)")
    e.add_argument("--images", type=int, default=None,
                   help="number of images, round-robin over classes (default: all)")

    r = sub.add_parser("report", help="re-render tables and figures from a run folder")
    r.add_argument("run", help="run folder")

    sub.add_parser("models", help="list zoo models with their recorded accuracy")
    sub.add_parser("train", help="train a zoo model (see `jaxattack train --help`)",
                   add_help=False)
    return ap


def _runtime_errors() -> tuple[type[Exception], ...]:
    """Errors shown as one line; only evaluated when one is raised (keeps flax off start-up)."""
    from jaxattack.models.weights import WeightsError

    return (ValueError, TypeError, FileNotFoundError, KeyError, ImportError, OSError,
            WeightsError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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
    if args.command == "report":
        return _report(Path(args.run))
    return _attack_or_sweep(args)


def _attack_or_sweep(args) -> int:
    from jaxattack import sweep

    common = dict(data=args.data, split=args.split, population=args.population,
                  generations=args.generations, seed=args.seed,
                  early_stop="paper" if args.preset == "paper" else "success",
                  loss=args.loss, F=args.F, crossover=args.crossover)
    if args.command == "attack":
        exps = [sweep.Experiment(model=args.model, pixels=args.pixels, mode=args.mode,
                                 strategy=args.strategy, **common)]
        out = args.out or _default_out(args)
    else:
        exps = sweep.grid(args.models, args.pixels, args.modes, args.strategies, **common)
        out = args.out
    lead = True
    if getattr(args, "distributed", False):
        from jaxattack import distributed

        lead = distributed.initialize(args.coordinator, args.num_processes,
                                      args.process_id)[0] == 0
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


def _eval(args) -> int:
    import numpy as np

    from jaxattack import data
    from jaxattack.attack import predict
    from jaxattack.data import select_images
    from jaxattack.sweep import load_classifier

    clf = load_classifier(args.model)
    x, y, _ = data.load(args.data, split=args.split)
    sel = select_images(np.asarray(y), args.images)
    acc = float((predict(clf, x[sel]).argmax(-1) == np.asarray(y)[sel]).mean())
    print(f"{args.model} on {args.data}:{args.split} ({sel.size} images): "
          f"accuracy {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
