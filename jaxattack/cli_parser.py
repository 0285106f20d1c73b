"""The ``jaxattack`` argument parser: one option per ``AttackConfig`` field from its
metadata (a comma list for a sweep's grid fields), the data-source and model-file
options, the subcommands; and the conversions of option text to values."""

from __future__ import annotations

import argparse
import dataclasses
import functools

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
    from jaxattack.runs.attack import AttackConfig

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
