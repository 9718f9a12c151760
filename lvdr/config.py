"""Load, merge and validate pipeline configs against the one JSON schema.

The Snakefile validates with Snakemake's ``validate()`` against the same schema file, so
the pipeline and the CLI accept exactly the same configs. Here the errors are rewritten
into one line that names the offending key.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from lvdr.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
# libyaml's loader where PyYAML was built with it: every job parses the schema and its config (about 0.1 s
# each in pure Python), the same result
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_schema() -> dict:
    if not SCHEMA_PATH.exists():
        raise ConfigError(
            f"{SCHEMA_PATH}: config schema not found; install lvdr in editable mode "
            "from its repository (pip install -e .)"
        )
    return yaml.load(SCHEMA_PATH.read_text(), Loader=SAFE_LOADER)


def _with_defaults(cls):
    """A validator class that fills in each property's default before descending into it."""
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(cls, {"properties": set_defaults})


def _subschema(schema: dict, path: Iterable) -> dict:
    node = schema
    for part in path:
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(part, {})
    return node


def _describe(error: jsonschema.ValidationError, schema: dict) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        parts = []
        for key in extra:
            full = f"{where}.{key}" if where else key
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            parts.append(f"unknown config key '{full}'{hint}")
        return "; ".join(parts) + f" (known keys{' in ' + where if where else ''}: {', '.join(known)})"
    description = _subschema(schema, error.absolute_path).get("description", "")
    hint = f" [{where}: {description.strip()}]" if description else ""
    return f"config key '{where or '<top>'}': {error.message}{hint}"


def validate(config: dict | None) -> dict:
    """Return a validated copy of ``config`` with every default filled in; the PRM's per-dataset and ablation
    overrides too, merged as they will train, so that a typo in one fails now and not when its job starts."""
    config = _validate(config)
    prm = config["prm"]
    for name in [None, *prm["ablations"]]:
        for dataset in [None, *prm["by_dataset"]]:
            variant(config, name, dataset)
    for dataset in config["diffae"]["by_dataset"]:
        stage1_config(config, dataset)
    return config


def _validate(config: dict | None) -> dict:
    schema = load_schema()
    config = copy.deepcopy(config or {})
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a mapping of keys to values, got {type(config).__name__}")
    validator = _with_defaults(jsonschema.validators.validator_for(schema))(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError(_describe(errors[0], schema))
    return config


def merge(base: dict, update: dict) -> dict:
    """Deep-merge ``update`` into a copy of ``base`` (later config files win, as in Snakemake)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load(paths: Iterable[str | Path] = ()) -> dict:
    """Read, merge and validate config files (none: the built-in defaults only)."""
    merged: dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        try:
            data = yaml.load(path.read_text(), Loader=SAFE_LOADER) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
        merged = merge(merged, data)
    try:
        return validate(merged)
    except ConfigError as exc:
        names = ", ".join(str(p) for p in paths) or "<defaults>"
        raise ConfigError(f"{names}: {exc}") from None


def dump(cfg: dict) -> str:
    """The config as YAML text, keys in schema order: what `lvdr config` prints and the pipeline writes."""
    return yaml.safe_dump(cfg, sort_keys=False)


def write_resolved(cfg: dict, folder: str | Path) -> Path:
    """Write the validated ``cfg`` to FOLDER/<content hash>.yaml (once) and return its path.

    The pipeline resolves its config once, as Snakemake merged it (the Snakefile's configfile,
    then every --configfile, then --config overrides), and hands every job this one file, so a
    job cannot read a different config from the one that built the graph. Content-addressed, so
    two runs with different configs never overwrite each other's file.
    """
    from lvdr.files import atomic_path

    text = dump(validate(cfg))
    path = Path(folder) / f"{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    if not path.is_file():  # the name is the content's hash, and the write is atomic: an existing file is this text
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return path


def variant(cfg: dict, name: str | None, dataset: str | None = None) -> tuple[dict, str]:
    """The PRM config (validated) that trains on ``dataset``: ``prm`` with that dataset's ``prm.by_dataset``
    overrides and then those of the ablation ``name`` from ``prm.ablations``; and its method name."""
    prm = cfg["prm"]
    overrides = [prm["by_dataset"].get(dataset, {})] if dataset else []
    if name:
        if name not in prm["ablations"]:
            raise ConfigError(f"config key 'prm.ablations': no ablation named '{name}' "
                              f"(known: {', '.join(prm['ablations']) or 'none'})")
        overrides.append(prm["ablations"][name])
    method = f"lvdr_{name}" if name else "lvdr"
    if not any(overrides):
        return prm, method
    where = " and ".join(filter(None, [dataset and f"prm.by_dataset.{dataset}", name and f"prm.ablations.{name}"]))
    return _overridden(cfg, "prm", overrides, where), method


def _overridden(cfg: dict, key: str, overrides: list[dict], where: str) -> dict:
    """Section ``key`` of ``cfg`` with ``overrides`` deep-merged in turn, validated; an error names ``where`` they came from."""
    section = cfg[key]
    for update in overrides:
        section = merge(section, update)
    try:
        return _validate({**cfg, key: section})[key]
    except ConfigError as exc:
        raise ConfigError(f"{exc} (with the overrides of {where})") from None


def stage1_config(cfg: dict, dataset: str) -> dict:
    """The DiffAE config (validated) that trains on ``dataset``: ``diffae`` with that dataset's ``diffae.by_dataset``
    overrides. Every dataset trains the same number of models (diffae.seeds), so that LVDR's seeds pair alike."""
    update = cfg["diffae"]["by_dataset"].get(dataset)
    if not update:
        return cfg["diffae"]
    if "seeds" in update or "by_dataset" in update:
        key = "seeds" if "seeds" in update else "by_dataset"
        raise ConfigError(f"config key 'diffae.by_dataset.{dataset}.{key}': set diffae.{key} for every dataset instead")
    return _overridden(cfg, "diffae", [update], f"diffae.by_dataset.{dataset}")


def stage1_seeds(cfg: dict, dataset: str) -> list[int]:
    """The seeds stage 1 trains with on ``dataset``, one DiffAE (and latent cache) each: seed, seed + 1, ... for
    diffae.seeds models where LVDR trains (prm.datasets), whose seed spread they are there to hold; one elsewhere,
    where only the latent baselines read stage 1."""
    n = cfg["diffae"]["seeds"] if dataset in cfg["prm"]["datasets"] else 1
    return [cfg["seed"] + i for i in range(n)]


def stage1_seed(cfg: dict, seed: int) -> int:
    """The stage-1 seed whose latents the LVDR run with training seed ``seed`` reads: LVDR's i-th seed (seed + i)
    reads the i-th stage-1 model, cycling when there are fewer, so that LVDR's spread over its seeds holds stage 1's."""
    return cfg["seed"] + (seed - cfg["seed"]) % cfg["diffae"]["seeds"]
