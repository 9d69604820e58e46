"""Config loading and validation: one JSON Schema (workflow/schemas/config.schema.yaml) for every config."""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path

import yaml

from rpo import paper
from rpo.errors import ConfigError
from rpo.redact import redact

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


@functools.cache
def _schema_text_loaded() -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(SCHEMA_PATH.read_text(), Loader=loader)


def load_schema() -> dict:
    return copy.deepcopy(_schema_text_loaded())


@functools.cache
def _validator_class():
    return _defaulting_validator()


def _defaulting_validator():
    import jsonschema  # the warm client imports this module; only validating needs jsonschema (~0.1 s in each of a run's hundreds of steps)

    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]
    # JSON Schema counts 2.0 as an integer; a step count or batch size of 2.0 would crash deep inside a job.
    strict_integers = base.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    )

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if key not in instance and "default" in sub:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": fill_defaults}, type_checker=strict_integers)


def _key_of(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in allowed)
        if unknown:
            return ".".join(filter(None, [path, unknown[0]]))
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        if missing:
            return ".".join(filter(None, [path, missing[0]]))
    return path or "<top level>"


def _describe(error) -> str:
    key = _key_of(error)
    if error.validator == "additionalProperties":
        return f"config key '{key}': unknown key (allowed: {', '.join(sorted(error.schema.get('properties', {})))})"
    if error.validator == "required":
        return f"config key '{key}': required key is missing"
    return f"config key '{key}': {error.message}"


def resolve(raw: dict, source: str = "config") -> dict:
    """Validate a config dict and return a deep copy with every default filled in."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the config must be a mapping, got {type(raw).__name__}")
    if "__use_yte__" in raw:
        raise ConfigError(
            f"{source}: config key '__use_yte__': YAML templates run code when Snakemake reads the config; "
            "rpo configs are plain data (docs/reliability.md)"
        )
    _refuse_non_finite(raw, source)
    _refuse_non_text_keys(raw, source)
    cfg = copy.deepcopy(raw)
    validator = _validator_class()(load_schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n  ".join(_describe(e) for e in errors)
        raise ConfigError(f"{source}: invalid config\n  {lines}")
    _check_cross_references(cfg, source)
    return cfg


def _refuse_non_finite(node, source: str, key: str = "") -> None:
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{source}: config key '{key or '<top level>'}': {node} is not a finite number")
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for name, child in children:
        _refuse_non_finite(child, source, f"{key}.{name}" if key else str(name))


def _refuse_non_text_keys(node, source: str, key: str = "") -> None:
    """A YAML key such as `0.5:` or `1:` is read as a number; as an ablation or model name it would become a path and
    a wildcard Snakemake cannot match."""
    if isinstance(node, dict):
        for name, child in node.items():
            where = f"{key}.{name}" if key else str(name)
            if not isinstance(name, str):
                raise ConfigError(
                    f"{source}: config key '{where}': YAML read this key as {type(name).__name__}; names are text "
                    f"(quote it: '\"{name}\":')"
                )
            _refuse_non_text_keys(child, source, where)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            _refuse_non_text_keys(child, source, f"{key}.{index}")


# What the workflow writes beside the models in results/<name>/: a model of one of these names would share its folder.
RESERVED_MODEL_NAMES = frozenset(
    {"configs", "figures", "logs", "tables", "config.yaml", "report.html", "report_run.json", "paper_comparison.md"}
)


def _check_cross_references(cfg: dict, source: str) -> None:
    for model in cfg["models"]:
        if model in RESERVED_MODEL_NAMES:
            raise ConfigError(
                f"{source}: config key 'models.{model}': the workflow writes results/<name>/{model} itself; "
                "name the model otherwise"
            )
    if "default" not in cfg["ablations"]:
        raise ConfigError(
            f"{source}: config key 'ablations.default': required (the unablated runs behind Table II; may be {{}})"
        )
    for name, ablation in cfg["ablations"].items():
        if ablation.get("table") and ablation["table"] not in paper.ABLATION_TABLES:
            raise ConfigError(
                f"{source}: config key 'ablations.{name}.table': '{ablation['table']}' is not one of "
                f"{sorted(paper.ABLATION_TABLES)}"
            )
        for method in ablation.get("methods", []):
            if method not in cfg["methods"]:
                raise ConfigError(
                    f"{source}: config key 'ablations.{name}.methods': '{method}' is not one of methods {cfg['methods']}"
                )
    data = cfg["data"]
    if not data["reward_range"][0] < data["reward_range"][1]:
        raise ConfigError(f"{source}: config key 'data.reward_range': [low, high] needs low < high")
    if data["density"] is not None and data["noise"] is not None:
        raise ConfigError(f"{source}: config key 'data.noise': set density or noise, not both (one ablation each)")
    if data["source"] != "synthetic" and not data["path"]:
        raise ConfigError(f"{source}: config key 'data.path': source '{data['source']}' needs a hub id or file path")
    for name, judge in cfg["judge"]["judges"].items():
        key = f"{source}: config key 'judge.judges.{name}"
        if judge["backend"] != "oracle" and not judge["model"]:
            raise ConfigError(f"{key}.model': backend '{judge['backend']}' needs a model name")
        if judge["backend"] == "openai_compatible" and not judge["base_url"]:
            raise ConfigError(f"{key}.base_url': an OpenAI-compatible judge needs the server's address (…/v1)")
        if judge["base_url"] and redact(judge["base_url"]) != judge["base_url"]:
            raise ConfigError(
                f"{key}.base_url': holds a password or token ({redact(judge['base_url'])}); configs are printed "
                "in Snakemake's logs and stored with every run: give the key in the environment (api_key_env)"
            )
        if judge["backend"] == "oracle" and data["source"] != "synthetic":
            raise ConfigError(f"{key}.backend': the oracle judge knows only the synthetic world's rewards")
    if data["sample_from_reference"]["completions"] and data["source"] != "synthetic":
        raise ConfigError(
            f"{source}: config key 'data.sample_from_reference': needs data.source 'synthetic' (its reward)"
        )
    synthetic_only = {"true_reward", "constraint_accuracy"} & set(cfg["score"]["metrics"])
    if synthetic_only and data["source"] != "synthetic":
        raise ConfigError(
            f"{source}: config key 'score.metrics': {sorted(synthetic_only)} need data.source 'synthetic'"
        )
    kl_tokens, generated = cfg["train"]["kl_max_new_tokens"], cfg["generate"]["max_new_tokens"]
    if kl_tokens is not None and kl_tokens != generated:
        raise ConfigError(
            f"{source}: config key 'train.kl_max_new_tokens': {kl_tokens} tokens, but rewards are measured on "
            f"generate.max_new_tokens = {generated}: the KL must cover the same responses (a prefix's KL is biased "
            "low); leave it null"
        )
    if data["n_dev_prompts"] >= data["n_eval_prompts"]:
        raise ConfigError(
            f"{source}: config key 'data.n_dev_prompts': {data['n_dev_prompts']} leaves none of data.n_eval_prompts "
            f"= {data['n_eval_prompts']} for the test split"
        )
    for name, model in cfg["models"].items():
        if model["source"] in ("pretrained", "gguf") and not model.get("path"):
            raise ConfigError(f"{source}: config key 'models.{name}.path': a pretrained model needs a hub id or folder")
        if model["source"] == "gguf" and not model.get("gguf_file"):
            raise ConfigError(f"{source}: config key 'models.{name}.gguf_file': source gguf needs the file's name")


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """A safe YAML loader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


MAX_EXPANDED_NODES = 100_000


def _refuse_alias_bombs(text: str, path: Path) -> None:
    """Aliases (`*name`) are bounded before anything is built from them: a few hundred bytes of nested aliases
    expand to billions of nodes (a "billion laughs"). The document's nodes are counted as if every alias were
    written out (memoised over the composed graph, so counting costs the document's size, not the expansion's)."""
    root = yaml.compose(text, Loader=_UniqueKeyLoader)
    sizes: dict[int, int] = {}

    def expanded(node) -> int:
        if id(node) not in sizes:
            sizes[id(node)] = 1  # a recursive alias counts once
            children = node.value if isinstance(node, yaml.SequenceNode) else []
            if isinstance(node, yaml.MappingNode):
                children = [child for pair in node.value for child in pair]
            sizes[id(node)] = 1 + sum(expanded(child) for child in children)
        return sizes[id(node)]

    try:
        total = expanded(root) if root is not None else 0
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply to be a config") from None
    if total > MAX_EXPANDED_NODES:
        raise ConfigError(
            f"{path}: its YAML aliases (*name) expand to {total:,} values (at most {MAX_EXPANDED_NODES:,}): "
            "refused before expanding them; write the values out"
        )


def read_yaml(path: str | Path) -> object:
    """A YAML file's content; a missing file, a folder, bad bytes, bad syntax or a duplicate key is a ConfigError."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a config file")
    try:
        text = path.read_text(encoding="utf-8")
        _refuse_alias_bombs(text, path)
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ConfigError(f"{path}: not valid YAML: {where}{problem}") from None


def read_layers(paths: list) -> object:
    """Config files merged in order, each later one an overlay deep-merged into those before it (as Snakemake merges
    several --configfile)."""
    raw = read_yaml(paths[0])
    for overlay in paths[1:]:
        layer = read_yaml(overlay)
        if not isinstance(raw, dict) or not isinstance(layer, dict):
            raise ConfigError(f"{' + '.join(map(str, paths))}: each config file must be a mapping")
        raw = deep_merge(raw, layer)
    return raw


def load(path: str | Path) -> dict:
    return resolve(read_yaml(path), source=str(path))


def check_every_cell(cfg: dict, source: str = "config") -> None:
    """Validate every per-model and per-ablation override as its jobs will see it, before any job starts."""
    for model in cfg["models"]:
        for ablation in cfg["ablations"]:
            try:
                for_cell(cfg, model, ablation)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def for_ablation(cfg: dict, ablation: str) -> dict:
    """The config one ablation's runs see: its overrides merged in and validated again."""
    if ablation not in cfg["ablations"]:
        raise ConfigError(f"config key 'ablations.{ablation}': no such ablation (have {sorted(cfg['ablations'])})")
    override = {k: v for k, v in cfg["ablations"][ablation].items() if k not in ("methods", "table", "label", "seeds")}
    return resolve(
        deep_merge(cfg, override),
        source=f"ablation '{ablation}' (its overrides under 'ablations.{ablation}' merged in)",
    )


def ablation_methods(cfg: dict, ablation: str) -> list[str]:
    return cfg["ablations"][ablation].get("methods", cfg["methods"])


def for_model(cfg: dict, model: str) -> dict:
    """The config a model's jobs see: its `train` overrides (batch size, lengths, LoRA...) merged in."""
    override = cfg["models"][model].get("train") or {}
    return (
        resolve(
            deep_merge(cfg, {"train": override}),
            source=f"model '{model}' (its overrides under 'models.{model}.train' merged in)",
        )
        if override
        else cfg
    )


def for_cell(cfg: dict, model: str, ablation: str) -> dict:
    """Model overrides first, then the ablation's (an ablation changes every model's runs alike)."""
    return for_ablation(for_model(cfg, model), ablation)


def for_run(cfg: dict, model: str, method: str, ablation: str) -> dict:
    """The config one training run sees: the model's overrides, the method's beta (objective.method_beta), then the
    ablation's overrides (an ablation that sets objective.beta wins)."""
    return for_cell(with_method_beta(cfg, method), model, ablation)


def with_method_beta(cfg: dict, method: str) -> dict:
    beta = cfg["objective"]["method_beta"].get(method)
    return cfg if beta is None else deep_merge(cfg, {"objective": {"beta": beta}})


def run_beta(cfg: dict, method: str, ablation: str) -> float:
    """The beta a method's runs in an ablation train with (the reference's: the config's beta)."""
    return for_ablation(with_method_beta(cfg, method), ablation)["objective"]["beta"]


def ablation_seeds(cfg: dict, ablation: str) -> list[int]:
    return cfg["ablations"][ablation].get("seeds", cfg["seeds"])


def runs(cfg: dict) -> list[dict]:
    """Every (model, method, ablation, seed) cell the config asks for."""
    cells = []
    for ablation in cfg["ablations"]:
        methods = ablation_methods(cfg, ablation)
        for model in cfg["models"]:
            for method in methods:
                for seed in ablation_seeds(cfg, ablation):
                    cells.append(dict(model=model, method=method, ablation=ablation, seed=seed))
    return cells


def optimum_enabled(cfg: dict) -> bool:
    """The optimum table and Figure 3 need a reward the pipeline can compute (the synthetic world's), the reference's
    samples to estimate the optimum from, and each policy's sampled true reward."""
    sampled = cfg["score"]["sampled_metrics"]
    return (
        cfg["data"]["source"] == "synthetic"
        and cfg["optimum"]["samples_per_prompt"] > 0
        and cfg["generate"]["samples_per_prompt"] > 0
        and "true_reward" in cfg["score"]["metrics"]
        and (sampled is None or "true_reward" in sampled)
    )


def draws_reference_rewards(cfg: dict) -> bool:
    """QRPO's reference rewards are drawn from each model's reference and scored where the reward can be computed
    (the synthetic world), objective.qrpo.ref_samples > 0 and some ablation trains a method that reads them."""
    methods = {m for a in cfg["ablations"] for m in ablation_methods(cfg, a)}
    return (
        cfg["data"]["source"] == "synthetic"
        and cfg["objective"]["qrpo"]["ref_samples"] > 0
        and bool(methods & set(paper.REFERENCE_REWARD_METHODS))
    )


def trained_betas(cfg: dict) -> list[float]:
    """Every beta a run of this config trains with (per method, the default's and the ablations' overrides)."""
    return sorted({run_beta(cfg, m, a) for a in cfg["ablations"] for m in ablation_methods(cfg, a)})


def kl_max_new_tokens(cfg: dict) -> int:
    """The KL's response length: the responses the reward is measured on (generate.max_new_tokens)."""
    return cfg["train"]["kl_max_new_tokens"] or cfg["generate"]["max_new_tokens"]


def training_table_name(cfg: dict) -> str:
    """The training table a (resolved, ablation-merged) config trains on: train, train_density0.5, train_noise0.1."""
    data = cfg["data"]
    if data["density"] is not None:
        return f"train_density{data['density']}"
    if data["noise"] is not None:
        return f"train_noise{data['noise']}"
    return "train"


def slice_for(cfg: dict, ablations: list[str]) -> dict:
    """What jobs depending on these ablations only read: the config with just the default's and their overrides
    ([]: no overrides at all, for the jobs every ablation shares). Written per ablation (and per ablation table),
    so changing one ablation reruns only its jobs."""
    out = copy.deepcopy(cfg)
    keep = ["default", *ablations] if ablations else []
    out["ablations"] = {name: out["ablations"][name] for name in dict.fromkeys(keep)} or {"default": {}}
    return out
