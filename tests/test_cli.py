"""The command line end to end on the built-in sample, and its errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxattack import cli

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "tests" / "cli_model.py") + ":classifier"
FAST = ["--population", "8", "--generations", "3", "--images", "6", "--no-progress"]


def test_attack_end_to_end_files_and_numbers(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["attack", "--model", MODEL, "--mode", "all-targets", "--out", str(out),
                   "--save-images", "all", *FAST])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "report.md" in printed and "all-targets" in printed
    for f in ("results.jsonl", "meta.json", "summary.json", "report.md",
              "figures/class_pairs.png", "figures/success_vs_queries.png"):
        assert (out / f).is_file(), f
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6 * 9
    assert all((out / r["png"]).is_file() for r in rows)
    assert all(Path(r["png"]).parts[0] == "images" for r in rows)
    assert {p.name for p in (out / "images").iterdir()} == {rows[0]["experiment"]}
    assert rows[0]["experiment"].startswith("cli_model_k1_all-targets_de_")
    agg = json.loads((out / "summary.json").read_text())["aggregates"]
    assert len(agg) == 1
    ok = [r for r in rows if r["clean_correct"]]
    assert agg[0]["success_rate"] == pytest.approx(sum(r["success"] for r in ok) / len(ok))
    assert agg[0]["mean_queries"] == pytest.approx(sum(r["queries"] for r in ok) / len(ok))
    assert all(r["queries"] == 8 * (r["generations_used"] + 1) for r in rows)
    names = json.loads((out / "meta.json").read_text())["class_names"]
    assert names[0] == "airplane" and len(names) == 10


@pytest.mark.slow
def test_sweep_then_report_rerenders_without_recomputing(tmp_path, capsys):
    out = tmp_path / "grid"
    assert cli.main(["sweep", "--models", MODEL, "--pixels", "1,2", "--modes",
                     "untargeted,targeted", "--out", str(out), *FAST]) == 0
    before = (out / "results.jsonl").read_bytes()
    assert len(before.splitlines()) == 4 * 6
    (out / "summary.json").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert (out / "summary.json").is_file()
    assert (out / "results.jsonl").read_bytes() == before
    assert len(json.loads((out / "summary.json").read_text())["aggregates"]) == 4


@pytest.mark.slow
def test_reused_folder_prints_only_this_commands_experiments(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli.main(["attack", "--model", MODEL, "--out", out, *FAST]) == 0
    capsys.readouterr()
    fast = [*FAST[:-3], "--images", "2", "--no-progress"]
    assert cli.main(["attack", "--model", MODEL, "--out", out, "--seed", "1", *fast]) == 0
    printed = capsys.readouterr().out
    (line,) = [s for s in printed.splitlines() if "cli_model.py" in s and "| untargeted" in s]
    assert "/2 |" in line and "seeds" not in printed  # 2 images of seed 1, not 8 pooled
    assert "6 more stored rows of other experiments are in the report" in printed
    # `report` shows the whole folder: both seeds pooled, and says so.
    assert cli.main(["report", out]) == 0
    printed = capsys.readouterr().out
    assert "seeds" in printed and "0,1" in printed and "/6 |" in printed


@pytest.mark.parametrize("argv,match", [
    (["attack", "--model", "no-such-model"], "no-such-model"),
    (["attack", "--model", "missing.py:f"], "model file not found"),
    (["attack", "--model", f"{ROOT}/tests/cli_model.py:not_a_classifier"], "not a jaxattack"),
    (["attack", "--model", MODEL, "--data", "/no/such/data"], "/no/such/data"),
    (["attack", "--model", MODEL, "--pixels", "0"], "pixels must be >= 1"),
    (["attack", "--model", MODEL, "--images", "-1"], "--images must be >= 1"),
    (["attack", "--model", MODEL, "--population", "2"], "population must be >= 4"),
    (["sweep", "--models", MODEL, "--out", "x", "--coordinator", "h:1"], "needs --distributed"),
    (["sweep", "--models", MODEL, "--out", "x", "--process-id", "1"], "needs --distributed"),
    (["attack", "--model", MODEL, "--cpu-devices", "0"], "--cpu-devices must be >= 1"),
    (["eval", "--model", MODEL, "--images", "0"], "--images must be >= 1"),
    (["train", "--data", "/no/such/data", "--epochs", "1"], "/no/such/data"),
    (["report", "/no/such/run"], "no results.jsonl"),
    (["attack", "--model", MODEL, "--strategy-param", "tau=0.1"],
     "no strategy of de has a parameter 'tau'"),
    (["attack", "--model", MODEL, "--strategy", "jde", "--strategy-param", "tau=x"],
     "--strategy-param tau: expected float, got 'x'"),
    (["attack", "--model", MODEL, "--strategy", "jde", "--strategy-param", "tau"],
     "takes NAME=VALUE"),
    (["attack", "--model", MODEL, "--strategy", "sparse-rs", "--strategy-param", "p_init=2"],
     "p_init must lie in (0, 1]"),
    (["attack", "--model", MODEL, "--strategy", "sparse-rs", "--population", "0"],
     "population must be >= 1 for sparse-rs"),
    (["repair", "/no/such/run"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_1(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    progress = ["--no-progress"] if argv[0] in ("attack", "sweep") else []
    assert cli.main([*argv, *progress]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxattack: error:") and match in err and "\n" not in err


def test_unshipped_zoo_model_is_one_line_and_leaves_no_run_folder(capsys, tmp_path,
                                                                  monkeypatch):
    from jaxattack import models

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(models, "read_registry", lambda *a, **k: {})
    assert cli.main(["attack", "--model", "allcnn", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "no weights shipped yet" in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_report_reads_a_sharded_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["attack", "--model", MODEL, "--out", str(out), *FAST]) == 0
    (out / "results.jsonl").rename(out / "results.p0.jsonl")  # as a 2-process run writes
    (out / "summary.json").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["aggregates"][0]["n_images"] == 6


def test_default_run_folder_names_what_differs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(["attack", "--model", MODEL, "--loss", "margin",
                                          "--preset", "paper", "--seed", "3"])
    assert cli._default_out(args) == "runs/cli_model-k1-untargeted-margin-paper-seed3"
    args = cli.build_parser().parse_args(["attack"])
    assert cli._default_out(args) == "runs/tiny-k1-untargeted"


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["attack", "--mode", "sideways"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["sweep", "--pixels", "1,x", "--out", "o"])
    assert e.value.code == 2


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "jaxattack.cli", "attack", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for opt in ("--model", "--data", "--pixels", "--mode", "--images", "--preset",
                "--population", "--generations", "--out"):
        assert opt in out


def test_every_config_field_is_an_option_with_its_help():
    import dataclasses

    from jaxattack.runs.attack import AttackConfig

    for command, extra in (("attack", []), ("sweep", ["--out", "x"])):
        args = cli.build_parser().parse_args([command, *extra])
        text = subprocess.run([sys.executable, "-m", "jaxattack.cli", command, "--help"],
                              capture_output=True, text=True, check=True).stdout
        text = " ".join(text.split())
        for f in dataclasses.fields(AttackConfig):
            assert hasattr(args, f.name), (command, f.name)
            assert " ".join(f.metadata["help"].split()[:4]) in text, (command, f.name)


@pytest.mark.slow
def test_strategy_params_from_the_command_line_are_stored(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["sweep", "--models", MODEL, "--pixels", "1", "--strategies", "de,jde",
                     "--strategy-param", "tau=0.3", "--out", str(out), *FAST]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by = {r["strategy"]: r for r in rows}
    assert by["jde"]["strategy_params"] == {"tau": 0.3}
    assert "strategy_params" not in by["de"]  # de has no tau: its rows (and id) as before
    agg = json.loads((out / "summary.json").read_text())["aggregates"]
    assert {a["strategy"]: a["strategy_params"] for a in agg} == {"de": {}, "jde": {"tau": 0.3}}


ONNX = str(ROOT / "tests" / "fixtures" / "cnn.onnx")
ONNX_CONVENTIONS = ["--input-scale", "1", "--mean", "0.4914,0.4822,0.4465",
                    "--std", "0.247,0.2435,0.2616"]


def test_eval_prints_the_accuracy_of_a_model_file_and_catches_wrong_conventions(capsys):
    pytest.importorskip("onnx", reason="the onnx extra: pip install -e '.[onnx]'")
    assert cli.main(["eval", "--model", ONNX, *ONNX_CONVENTIONS, "--images", "100"]) == 0
    out = capsys.readouterr().out
    assert "cnn.onnx on sample:test (100 images): accuracy 0.6" in out
    assert cli.main(["eval", "--model", ONNX, "--images", "100"]) == 1  # no normalisation
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "check input_scale" in err and "mean/std" in err


@pytest.mark.slow
def test_attack_a_model_file_stores_its_conventions(tmp_path):
    pytest.importorskip("onnx", reason="the onnx extra: pip install -e '.[onnx]'")
    out = tmp_path / "run"
    assert cli.main(["attack", "--model", ONNX, *ONNX_CONVENTIONS, "--image-size", "32x32",
                     "--out", str(out), *FAST]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rows[0]["experiment"].startswith("cnn_k1_untargeted_de_")
    assert rows[0]["model_options"] == {"input_scale": "1", "mean": "0.4914,0.4822,0.4465",
                                        "std": "0.247,0.2435,0.2616"}
    assert rows[0]["data_options"] == {"image_size": "32x32"}


def test_model_and_image_options_are_checked(capsys):
    assert cli.main(["eval", "--model", "tiny", "--mean", "1,2,3"]) == 1
    assert "apply to model files" in capsys.readouterr().err
    assert cli.main(["eval", "--model", "tiny", "--resample", "nearest"]) == 1
    assert "--resample needs --image-size" in capsys.readouterr().err
