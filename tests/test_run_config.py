"""`--config FILE.toml` and the resolved settings every run writes: a round trip repeats the run's
settings exactly, the command line wins, and bad files are refused with the key named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxcg.cli import build_parser, main
from jaxcg.run_config import parse_with_config, resolved_path, write_resolved


def _parse(argv):
    return parse_with_config(build_parser(), argv)


def test_config_file_sets_defaults_and_the_command_line_wins(tmp_path):
    config = tmp_path / "train.toml"
    config.write_text('data = "cg.npz"\nout = "run"\nepochs = 3\nbatch-size = 64\nmap = "basic"\ncutoff = 0.9\n')
    args = _parse(["train", "--config", str(config), "--epochs", "7"])
    assert (args.data, args.out, args.epochs, args.batch_size, args.map, args.cutoff) == ("cg.npz", "run", 7, 64, "basic", 0.9)
    # options not in the file keep the command's defaults
    assert args.features == _parse(["train", "--data", "x", "--out", "y"]).features


@pytest.mark.parametrize("command", ["train", "simulate", "evaluate", "reference"])
def test_resolved_settings_repeat_the_run(tmp_path, command):
    required = {
        "train": ["--data", "cg.npz", "--out", str(tmp_path / "run"), "--epochs", "9", "--map", "slice"],
        "simulate": ["--energy", "m:f", "--start", "s.npz", "--steps", "100", "--out", str(tmp_path / "sim"), "--resume"],
        "evaluate": ["--model", "m", "--reference", "r.h5", "--out", str(tmp_path / "ev"), "--phi", "0", "1", "2", "3"],
        "reference": ["alanine_dipeptide", "--frames", "10", "--out", str(tmp_path / "ref.h5")],
    }[command]
    args = _parse([command, *required])
    path = write_resolved(args, resolved_path(args))
    assert path.parent == (tmp_path if command == "reference" else tmp_path / args.out.split("/")[-1])
    again = _parse([command, "--config", str(path)] if command != "reference" else
                   [command, "alanine_dipeptide", "--config", str(path)])
    skip = {"config", "resume"}
    assert {k: v for k, v in vars(again).items() if k not in skip} == {k: v for k, v in vars(args).items() if k not in skip}
    assert "resume" not in path.read_text()


def test_unknown_keys_and_bad_choices_are_refused(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('data = "x"\nout = "y"\nepoch = 3\n')
    with pytest.raises(SystemExit):
        _parse(["train", "--config", str(config)])
    assert "unknown option 'epoch'" in capsys.readouterr().err
    config.write_text('data = "x"\nout = "y"\nmap = "optimum"\n')
    with pytest.raises(SystemExit):
        _parse(["train", "--config", str(config)])
    assert "map = 'optimum' is not one of" in capsys.readouterr().err
    config.write_text("data = [\n")
    with pytest.raises(SystemExit):
        _parse(["train", "--config", str(config)])
    assert "cannot read it as TOML" in capsys.readouterr().err


def test_train_writes_its_resolved_settings(tmp_path):
    rng = np.random.default_rng(0)
    x = (np.cumsum(rng.normal(0, 0.2, (64, 4, 3)), axis=1) + 0.3 * np.arange(4)[:, None]).astype(np.float32)
    np.savez(tmp_path / "cg.npz", positions=x, forces=rng.normal(0, 10, x.shape).astype(np.float32),
             bead_types=np.array([0, 1, 1, 0]), bonds=np.stack([np.arange(3), np.arange(1, 4)], 1), temperature=300.0)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "cg.npz"), "--out", str(out), "--epochs", "1",
                 "--features", "8", "--rbf", "8", "--blocks", "1", "--batch-size", "16"]) == 0
    text = (out / "jaxcg-train.toml").read_text()
    assert "epochs = 1" in text and "features = 8" in text and 'map = "optimal"' in text
    assert json.loads((out / "model.json").read_text())["features"] == 8


@pytest.mark.slow  # about 20-35 s on 2 cores: run with -m slow
def test_train_progress_shows_compilation_and_continues_from_the_resumed_epoch(tmp_path, capsys, monkeypatch):
    import jaxcg.train

    rng = np.random.default_rng(1)
    x = (np.cumsum(rng.normal(0, 0.2, (64, 4, 3)), axis=1) + 0.3 * np.arange(4)[:, None]).astype(np.float32)
    np.savez(tmp_path / "cg.npz", positions=x, forces=rng.normal(0, 10, x.shape).astype(np.float32),
             bead_types=np.array([0, 1, 1, 0]), bonds=np.stack([np.arange(3), np.arange(1, 4)], 1), temperature=300.0)
    args = ["train", "--data", str(tmp_path / "cg.npz"), "--out", str(tmp_path / "run"), "--epochs", "3",
            "--features", "8", "--rbf", "8", "--blocks", "1", "--batch-size", "16"]
    real_fit = jaxcg.train.fit

    def fit_interrupted_after_the_first_epoch(*a, progress=None, **kw):
        def stop_after_epoch(epoch, step, steps, metrics):
            progress(epoch, step, steps, metrics)
            if metrics is not None:
                raise KeyboardInterrupt

        return real_fit(*a, progress=stop_after_epoch, **kw)

    monkeypatch.setattr(jaxcg.train, "fit", fit_interrupted_after_the_first_epoch)
    assert main(args) == 130
    first = capsys.readouterr().err
    assert "compiling" in first and "1/3" in first
    monkeypatch.setattr(jaxcg.train, "fit", real_fit)
    assert main([*args, "--resume"]) == 0
    resumed = capsys.readouterr().err.replace("\r", "\n")
    shown = [line for line in resumed.splitlines() if "/3 [" in line]
    # the bar starts at the epoch already done, never at 0 again
    assert "1/3" in resumed and "3/3" in resumed
    assert shown and not any(" 0/3" in line for line in shown)
