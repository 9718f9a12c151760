import pytest
import yaml
from snakemake.utils import validate as snakemake_validate

from lvdr import config as configs
from lvdr.errors import ConfigError

from conftest import REPO


def test_defaults_fill_every_key():
    cfg = configs.validate({})
    assert cfg["seed"] == 0
    assert cfg["spider"]["prepare"]["image_size"] == 64
    assert cfg["brats"]["prepare"]["label_level"] == "volume"
    assert cfg["retinamnist"]["size"] == 28


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_validate(name):
    cfg = configs.load([REPO / "config" / name])
    assert set(cfg["datasets"]) <= {"spider", "brats", "retinamnist"}


def test_every_schema_key_has_description_and_default():
    schema = configs.load_schema()

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{path}{key} has no description"
            assert "default" in sub, f"{path}{key} has no default"
            walk(sub, f"{path}{key}.")

    walk(schema, "")


def test_mistyped_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'spider\.prepare\.imge_size'; did you mean 'image_size'"):
        configs.validate({"spider": {"prepare": {"imge_size": 32}}})


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"brats\.prepare\.slab_length"):
        configs.validate({"brats": {"prepare": {"slab_length": "long"}}})


def test_files_merge_later_wins(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump({"seed": 1, "spider": {"prepare": {"image_size": 32}}}))
    b.write_text(yaml.safe_dump({"spider": {"prepare": {"crop_px": 40}}}))
    cfg = configs.load([a, b])
    assert (cfg["seed"], cfg["spider"]["prepare"]["image_size"], cfg["spider"]["prepare"]["crop_px"]) == (1, 32, 40)


def test_bad_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        configs.load([bad])


def test_snakemake_validate_uses_the_same_schema():
    good = {}
    snakemake_validate(good, str(configs.SCHEMA_PATH))
    assert good["spider"]["source"] == "demo"
    with pytest.raises(Exception, match="imge_size"):
        snakemake_validate({"spider": {"prepare": {"imge_size": 3}}}, str(configs.SCHEMA_PATH))


def test_resolved_config_is_content_addressed_and_reads_back_as_lvdr_config_prints_it(tmp_path, capsys):
    from lvdr.cli import main

    demo = configs.load([REPO / "config" / "config.yaml"])
    path = configs.write_resolved(demo, tmp_path)
    assert configs.write_resolved(demo, tmp_path) == path and len(list(tmp_path.iterdir())) == 1
    assert configs.write_resolved({**demo, "seed": 7}, tmp_path) != path  # another config, another file
    assert main(["config", "-c", str(path)]) == 0
    assert capsys.readouterr().out == path.read_text() == configs.dump(demo)


def test_paper_config_states_every_stage_2_and_stage_1_value():
    """config/paper.yaml writes out every PRM, DiffAE, DenseNet and evaluation key (App. C), so no demo value leaks in."""
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    schema = configs.load_schema()["properties"]

    def missing(node, written, path):
        for key, sub in node.get("properties", {}).items():
            if key not in written:
                yield path + key
            elif sub.get("type") == "object" and "properties" in sub:
                yield from missing(sub, written[key], f"{path}{key}.")

    for section in ("prm", "diffae", "densenet", "baselines", "evaluate"):
        assert not list(missing(schema[section], paper[section], f"{section}.")), section
    assert paper["prm"]["recon_k"] == 3 and paper["prm"]["train"]["lr"] == 1e-4 and paper["diffae"]["z_dim"] == 512
    # mappings of named entries merge key by key, so a demo entry the paper file leaves out would survive the
    # layering: the layered config holds exactly the paper's, and every dataset trains the paper's budget
    layered = configs.load([REPO / "config" / "config.yaml", REPO / "config" / "paper.yaml"])
    for key in ("by_dataset", "ablations"):
        assert layered["prm"][key] == paper["prm"][key], key
    assert layered["diffae"]["by_dataset"] == paper["diffae"]["by_dataset"]
    for dataset in layered["prm"]["datasets"]:
        assert configs.variant(layered, None, dataset)[0]["train"]["steps"] == paper["prm"]["train"]["steps"], dataset


def test_lvdr_seeds_read_stage_1_models_in_turn():
    """diffae.seeds stage-1 models where LVDR trains, one elsewhere; LVDR's i-th seed reads the i-th, cycling."""
    cfg = configs.validate({"seed": 5, "diffae": {"seeds": 2}, "prm": {"seeds": 3, "datasets": ["spider"]}})
    assert configs.stage1_seeds(cfg, "spider") == [5, 6] and configs.stage1_seeds(cfg, "brats") == [5]
    assert [configs.stage1_seed(cfg, s) for s in (5, 6, 7)] == [5, 6, 5]
    one = configs.validate({"seed": 5})  # the paper's single stage 1: every LVDR seed reads it
    assert configs.stage1_seeds(one, "spider") == [5] and [configs.stage1_seed(one, s) for s in (5, 6, 7)] == [5, 5, 5]


def test_stage_1_paths_per_run_are_checked():
    from lvdr.cli import for_runs, run_seed

    assert for_runs(None, [5, 6], lambda k: f"latents/seed{k}", "--latents") == ["latents/seed5", "latents/seed6"]
    assert for_runs(["a"], [5, 6], str, "--latents") == ["a", "a"]
    with pytest.raises(ConfigError, match="--latents: 2 paths for 3 runs"):
        for_runs(["a", "b"], [5, 6, 7], str, "--latents")
    assert run_seed("results/spider/lvdr/seed12") == 12
    with pytest.raises(ConfigError, match="not named seedN"):
        run_seed("my_run")


def test_stage_1_overrides_per_dataset():
    cfg = configs.validate({"diffae": {"train": {"steps": 100}, "by_dataset": {"brats": {"train": {"steps": 200}}}}})
    assert configs.stage1_config(cfg, "brats")["train"]["steps"] == 200 and configs.stage1_config(cfg, "spider")["train"]["steps"] == 100
    assert configs.stage1_config(cfg, "brats")["train"]["batch_size"] == cfg["diffae"]["train"]["batch_size"]
    with pytest.raises(ConfigError, match="diffae.by_dataset.brats.seeds"):
        configs.validate({"diffae": {"by_dataset": {"brats": {"seeds": 2}}}})
    with pytest.raises(ConfigError, match="diffae.by_dataset.brats"):
        configs.validate({"diffae": {"by_dataset": {"brats": {"train": {"stepz": 2}}}}})
