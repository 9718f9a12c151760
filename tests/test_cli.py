import re
import subprocess
import sys

import pytest

from lvdr.cli import main

COMMANDS = ["config", "fetch", "prepare", "train-diffae", "cache", "baseline", "train-densenet", "train-prm", "explain", "decode",
            "evaluate", "report", "export", "grade"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"] if command else ["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: lvdr" in out
    assert len(out) > 300
    assert "%%" not in out


def test_every_example_in_the_help_parses():
    """The top-level help's examples are commands a user will paste: each must be complete."""
    from lvdr.cli import DESCRIPTION, build_parser

    # each example is "lvdr COMMAND ARGS", then two or more spaces, then what it does
    examples = [re.split(r"\s{2,}", line.strip())[0].split()[1:] for line in DESCRIPTION.splitlines()
                if line.strip().startswith("lvdr ")]
    assert {e[0] for e in examples} == set(COMMANDS) - {"config"}
    for words in examples:
        build_parser().parse_args(words)  # argparse exits on a missing required argument


def test_variant_help_names_the_known_ablations(capsys):
    with pytest.raises(SystemExit):
        main(["train-prm", "--help"])
    assert "no_traj" in capsys.readouterr().out


def test_config_typo_fails_with_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spider:\n  sorce: demo\n")
    assert main(["config", "-c", str(bad)]) == 2
    assert "unknown config key 'spider.sorce'; did you mean 'source'?" in capsys.readouterr().err


def test_a_stage_process_loads_monai_without_the_extras_it_does_not_use():
    """MONAI imports torchvision (and with it torch._dynamo) for parts no stage uses: a stage's process skips it,
    MONAI's networks and transforms still load, and the commands that use torchvision keep it."""
    probe = ("import sys; from lvdr.cli import skip_unused_imports; skip_unused_imports(sys.argv[1]); "
             "from monai.networks.nets import DenseNet121; from monai.transforms import Spacing; "
             "from monai.networks.schedulers import DDIMScheduler; "
             "print('torchvision' in sys.modules and sys.modules['torchvision'] is not None, 'torch._dynamo' in sys.modules)")
    stage = subprocess.run([sys.executable, "-c", probe + "; print('matplotlib' in sys.modules and sys.modules['matplotlib'] is not None)",
                            "train-prm"], capture_output=True, text=True, check=True)
    assert stage.stdout.split() == ["False", "False", "False"]
    fetch = subprocess.run([sys.executable, "-c", probe + "; import torchvision", "fetch"], capture_output=True, text=True,
                           check=True)
    assert fetch.stdout.split()[0] == "True"
    drawing = subprocess.run([sys.executable, "-c", probe + "; import lvdr.explain.plots", "explain"], capture_output=True,
                             text=True, check=True)  # a stage that draws keeps matplotlib
    assert drawing.stdout.split()[0] == "False"


def test_python_dash_m_entry_point(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lvdr", "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("lvdr ")
    # `python -m lvdr` leaves through os._exit: the command's output, its log file and its exit code survive
    done = subprocess.run([sys.executable, "-m", "lvdr", "config", "--log", str(tmp_path / "c.log")],
                          capture_output=True, text=True, check=True)
    assert "datasets:" in done.stdout and done.stdout.endswith("\n")
    log = tmp_path / "p.log"
    done = subprocess.run([sys.executable, "-m", "lvdr", "prepare", "spider", "--manifest", str(tmp_path / "none.json"),
                           "--out", str(tmp_path / "o"), "--log", str(log)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "none.json" in done.stderr and "none.json" in log.read_text()


def test_a_new_seed_retrains_on_the_same_data_and_a_new_data_seed_draws_new_data(tmp_path):
    """`seed` is the training's; the demo's patients and the patient split follow `data_seed` alone, as a real
    release's files and split do not change when a model is retrained."""
    import numpy as np
    import pandas as pd
    import yaml

    from conftest import TINY

    def prepared(seed, data_seed):
        out = tmp_path / f"s{seed}d{data_seed}"
        cfg = out / "config.yaml"
        out.mkdir()
        cfg.write_text(yaml.safe_dump({"seed": seed, "data_seed": data_seed, "spider": TINY["spider"]}))
        assert main(["fetch", "spider", "-c", str(cfg), "--out", str(out / "raw")]) == 0
        assert main(["prepare", "spider", "-c", str(cfg), "--manifest", str(out / "raw" / "manifest.json"),
                     "--out", str(out / "prepared")]) == 0
        return pd.read_parquet(out / "prepared" / "slices.parquet"), np.load(out / "prepared" / "slices.npy")

    (table, slices), (retrained, same) = prepared(3, 3), prepared(4, 3)
    pd.testing.assert_frame_equal(table, retrained)
    assert np.array_equal(slices, same)
    _, other = prepared(3, 4)
    assert other.shape != slices.shape or not np.array_equal(other, slices)


def test_missing_manifest_is_a_clear_error(tmp_path, capsys):
    code = main(["prepare", "spider", "--manifest", str(tmp_path / "none.json"), "--out", str(tmp_path / "o")])
    assert code != 0
    assert "none.json" in capsys.readouterr().err


def test_job_times_read_wall_and_cpu_seconds_from_the_logs(tmp_path):
    from lvdr.log import job_times

    (tmp_path / "fetch").mkdir()
    (tmp_path / "fetch" / "x.log").write_text("12:00:00 INFO    lvdr: lvdr fetch done in 2.0 s (3.5 s CPU)\n")
    (tmp_path / "old.log").write_text("12:00:00 INFO    lvdr: lvdr report done in 1.5 s\n")  # before CPU time was logged
    (tmp_path / "failed.log").write_text("12:00:00 ERROR   lvdr: no such file\n")
    assert job_times(tmp_path, cpu=True) == [("fetch/x", 2.0, 3.5), ("old", 1.5, None)]
    assert job_times(tmp_path) == [("fetch/x", 2.0), ("old", 1.5)]


def test_wall_seconds_span_the_first_and_last_dated_log_lines(tmp_path):
    from lvdr.log import wall_seconds

    assert wall_seconds(tmp_path) is None
    (tmp_path / "a.log").write_text("2026-12-02 23:59:50 INFO    lvdr: start\n2026-12-03 00:00:05 INFO    lvdr: done\n")
    (tmp_path / "b.log").write_text("2026-12-03 00:00:01 INFO    lvdr: start\n2026-12-03 00:01:10 INFO    lvdr: done\n"
                                    "a traceback line without a date\n")
    assert wall_seconds(tmp_path) == 80.0


def test_every_stage_that_runs_torch_keeps_to_its_rules_threads():
    """A rule claims `threads` CPUs for its job; a stage that ran torch without --threads would use every core
    (torch's default) beside the other jobs Snakemake starts, as explain and export once did."""
    from pathlib import Path

    rules = Path(__file__).resolve().parents[1] / "workflow" / "rules"
    commands = {}
    for smk in sorted(rules.glob("*.smk")):
        for block in re.findall(r'shell:\n((?:\s+".*"\n?)+)', smk.read_text()):
            command = re.search(r"(?:lvdr|\{params\.launch\}) ([a-z-]+)", block).group(1)
            commands[command] = "--threads {threads}" in block
    without_torch = {"fetch", "evaluate", "report", "baseline"}  # numpy, scikit-learn and the report's figures only
    assert set(commands) >= {"prepare", "train-diffae", "train-densenet", "train-prm", "explain", "decode", "export"}
    assert [c for c, threads in commands.items() if not threads and c not in without_torch] == []
