"""`rpo`: one subcommand per pipeline step; the Snakemake rules call these.

Each subcommand imports its stage's modules when it runs: importing every stage costs about 8 s on 2 cores (torch,
transformers, accelerate, MLflow, seaborn), which `rpo config`, a report step or the warm-start client would
pay for nothing (`import rpo.cli` alone: under 0.1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

from rpo import JOB_STARTED, config, io, paper, paths, versioning, warm
from rpo.errors import ConfigError, DataError, JudgeError, OutputError, TrainingError, VersioningError
from rpo.redact import redact


def _config(args) -> dict:
    return config.load(args.config)


def _cell(args) -> dict:
    return {"model": args.model, "method": args.method, "ablation": args.ablation, "seed": args.seed}


def cmd_config(args) -> None:
    if bool(args.json) == bool(args.config):
        raise ConfigError("rpo config: give a config file (--config FILE) or its JSON (--json TEXT), one of the two")
    if args.json:
        try:
            raw, source = json.loads(args.json), "--json"
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--json: not valid JSON: {exc}") from None
    else:
        raw, source = config.read_layers(args.config), " + ".join(args.config)
    cfg = config.resolve(raw, source=source)
    config.check_every_cell(cfg, source)
    if args.print_name:  # for scripts (the Makefile): the validated name, never a shell's reading of the file
        print(cfg["name"])
        return
    resolved = yaml.safe_dump(cfg, sort_keys=False)
    if args.out:
        io.write_text(args.out, resolved)
    if args.create_store:
        from rpo import tracking  # sets MLflow's retry defaults in os.environ when imported: only where it logs

        try:  # create the store and the config's experiment early (jobs that race to create it take a lock)
            tracking.store_config(cfg, resolved)
        except Exception as exc:  # noqa: BLE001 - jobs record their runs offline then
            print(f"warning: MLflow unreachable at {tracking.shown_uri()}: {redact(str(exc))}", file=sys.stderr)
    print(f"config '{cfg['name']}' is valid: {len(config.runs(cfg))} training runs")


def cmd_runs(args) -> None:
    """Where a config's runs are in the MLflow UI: the runs table of its experiment, and the filter per table."""
    import mlflow

    from rpo import tracking
    from rpo.report.mlflow_run import table_filter

    cfg, uri = _config(args), tracking.shown_uri()
    mlflow.set_tracking_uri(tracking.tracking_uri())
    experiment = mlflow.get_experiment_by_name(tracking.experiment_name(cfg))
    if experiment is None:
        raise ConfigError(f"no MLflow experiment '{tracking.experiment_name(cfg)}' in {uri}: run the workflow first")
    print(f"MLflow UI: {Path(sys.executable).with_name('mlflow')} ui --backend-store-uri {uri}   then open")
    print(f"  {tracking.ui_url(experiment.experiment_id)}   (the runs of '{experiment.name}')")
    print("The runs behind each table or figure (paste the filter into the UI's search box, or open the link):")
    for name in [*paper.TABLES, *paper.OPTIMUM_TABLES, *paper.FIGURES.values()]:
        print(f"  {name:<22} {table_filter(name):<26} {tracking.ui_url(experiment.experiment_id, table_filter(name))}")


def cmd_prepare_data(args) -> None:
    from rpo.data import prepare

    manifest = prepare.prepare(_config(args), args.out_dir)
    print(json.dumps(manifest["rows"]))


def cmd_data_variant(args) -> None:
    from rpo.data import variants

    print(json.dumps(variants.make_variant(_config(args), args.train, args.kind, args.value, args.out)))


def cmd_version_data(args) -> None:
    print(versioning.track(args.path))


def cmd_mlflow_import(args) -> None:
    from rpo import tracking

    for folder in args.folders:
        print(f"{folder}: imported as MLflow run(s) {', '.join(tracking.replay(folder))}")


def cmd_init_model(args) -> None:
    from rpo.reference import init

    init.init_model(_config(args), args.model, args.train, args.out_dir, args.eval)


def cmd_sample_data(args) -> None:
    from rpo.reference import sample

    print(json.dumps(sample.sample_training_data(_config(args), args.model, args.model_dir, args.train, args.out)))


def cmd_reference_samples(args) -> None:
    from rpo.reference import optimum

    print(
        json.dumps(
            optimum.sample_for_optimum(
                _config(args), args.model, args.model_dir, args.eval, args.train, args.out, args.train_out
            )
        )
    )


def cmd_reference_rewards(args) -> None:
    from rpo.reference import optimum

    print(json.dumps(optimum.sample_reference_rewards(_config(args), args.model, args.model_dir, args.train, args.out)))


def cmd_ref_logprobs(args) -> None:
    from rpo.reference import logprobs

    logprobs.compute_ref_logprobs(_config(args), args.model, args.model_dir, args.train, args.out)


def cmd_train(args) -> None:
    from rpo.train import loop

    if args.dvc_pointer:  # the prepared tables it reads must be the ones their pointer names
        folder = Path(args.dvc_pointer).with_suffix("")
        tables = [t for t in (args.train, args.base_train, args.eval) if t and paths.inside(t, folder)]
        versioning.check_pointer(args.dvc_pointer, tables)

    summary = loop.train(
        _config(args),
        _cell(args),
        args.init,
        args.train,
        args.ref,
        args.out_dir,
        args.base_train,
        args.eval,
        args.ref_rewards,
    )
    print(json.dumps({k: summary.get(k) for k in ("steps", "first_loss", "final_loss", "wall_time_s")}))


def cmd_generate(args) -> None:
    from rpo.evaluate import generate

    generate.generate(_config(args), _cell(args), args.model_dir, args.eval, args.out, args.samples)


def cmd_generate_ood(args) -> None:
    from rpo.evaluate import generate

    generate.generate_ood(_config(args), _cell(args), args.model_dir, args.out)


def cmd_score_ood(args) -> None:
    from rpo.evaluate import score

    print(json.dumps(score.score_ood(_config(args), _cell(args), args.generations, args.out)["benchmarks"]))


def _by_method(paths: list[str]) -> dict:
    """`method=path` pairs as a dict."""
    pairs = dict(p.split("=", 1) for p in paths or [])
    if pairs and "rpo" not in pairs:
        raise ValueError("the generations to judge must include rpo=<path>")
    return pairs


def cmd_judge(args) -> None:
    from rpo.evaluate import judges

    result = judges.run(_config(args), _cell(args), args.judge, args.scope, _by_method(args.generations), args.out)
    print(json.dumps({"in_domain": result["in_domain"], "ood": result["ood"], "calls": result["backend_calls"]}))


def cmd_score(args) -> None:
    from rpo.evaluate import score

    summary = score.score(_config(args), _cell(args), args.generations, args.out, args.samples, args.eval)
    print(json.dumps(summary["metrics"]))


def cmd_diagnose(args) -> None:
    from rpo.evaluate import diagnose

    samples = {"test": args.test_samples, "train": args.train_samples}
    result = diagnose.diagnose(
        _config(args),
        _cell(args),
        args.model_dir,
        samples,
        args.train,
        args.ref,
        args.base_train,
        args.out,
        args.ref_rewards,
    )
    print(json.dumps({k: result[k]["kl_to_optimum"] for k in samples if k in result}))


def cmd_report(args) -> None:
    cfg = _config(args)
    if args.what in paper.TABLES or args.what in paper.OPTIMUM_TABLES:
        from rpo.report import tables

        print(tables.write_table(cfg, args.what, args.inputs, args.out_prefix))
    elif args.what in paper.FIGURES:
        from rpo.report import figures

        figures.write_figure(cfg, args.what, args.inputs, args.out_prefix)
    elif args.what == "paper_comparison":
        from rpo.report import comparison

        comparison.paper_comparison(cfg, args.inputs, args.out_prefix)
    else:
        from rpo.report import mlflow_run

        print(f"MLflow report run: {mlflow_run.log_report_run(cfg, args.inputs, args.out_prefix)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rpo", description="RPO reproduction pipeline: one subcommand per stage.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STEP")

    def step(name, func, help_text, cell=False, config=True):
        p = sub.add_parser(name, help=help_text, description=help_text)
        if config:
            p.add_argument("--config", required=True, help="config YAML (validated against the schema)")
        if cell:
            p.add_argument("--model", required=True)
            p.add_argument("--method", required=True)
            p.add_argument("--ablation", default="default")
            p.add_argument("--seed", type=int, default=0)
        p.set_defaults(func=func)
        return p

    def reference_step(name, func, help_text, train_help=None):
        """A step over one model's reference: its folder, a training table, one output."""
        p = step(name, func, help_text)
        p.add_argument("--model", required=True)
        p.add_argument("--model-dir", required=True)
        p.add_argument("--train", required=True, help=train_help)
        p.add_argument("--out", required=True)
        return p

    p = step("config", cmd_config, "validate a config and write it with every default filled in", config=False)
    p.add_argument("--config", nargs="+", help="config YAML, then any overlays (config/paper_released.yaml)")
    p.add_argument("--json", help="config as JSON (what Snakemake resolved, overrides included)")
    p.add_argument("--out", help="where to write the resolved config")
    p.add_argument("--create-store", action="store_true", help="also create the MLflow store and experiment")
    p.add_argument("--print-name", action="store_true", help="only validate and print the config's name")

    p = step("prepare-data", cmd_prepare_data, "build train/eval tables, standardised rewards and a manifest")
    p.add_argument("--out-dir", required=True)

    p = step("data-variant", cmd_data_variant, "write an ablation's training table: completion density or reward noise")
    p.add_argument("--train", required=True)
    p.add_argument("--kind", required=True, choices=["density", "noise"])
    p.add_argument("--value", required=True, type=float)
    p.add_argument("--out", required=True)

    p = step(
        "version-data", cmd_version_data, "version prepared tables with DVC (dvc add, then dvc push)", config=False
    )
    p.add_argument("--path", required=True, help="folder of prepared tables")

    step("runs", cmd_runs, "print the MLflow UI address of the config's runs and the filter behind each table")

    p = step("mlflow-import", cmd_mlflow_import, "import runs recorded while MLflow was unreachable", config=False)
    p.add_argument("folders", nargs="+", help="job folders holding mlflow_offline.json")

    p = step(
        "init-model", cmd_init_model, "create the reference model (tiny from scratch, or point at a pretrained one)"
    )
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True, help="train.parquet (a tiny model's tokenizer is built from it)")
    p.add_argument("--eval", help="eval.parquet: its prompts are kept out of pretraining demonstrations")
    p.add_argument("--out-dir", required=True)

    reference_step(
        "sample-data",
        cmd_sample_data,
        "sample the reference's completions on the training prompts and score "
        "them with the synthetic world's true reward (its training set)",
        "prepared train.parquet: its prompts are used",
    )

    reference_step("ref-logprobs", cmd_ref_logprobs, "compute and cache reference log-probs of every training row")

    p = reference_step(
        "reference-samples",
        cmd_reference_samples,
        "draw optimum.samples_per_prompt completions per held-out "
        "prompt from the reference and score them (the sample the KL-regularised optimum is estimated from)",
        "the model's training table: its reward standardisation",
    )
    p.add_argument("--eval", required=True)
    p.add_argument("--train-out", help="also draw them for optimum.train_prompts training prompts, into this file")

    reference_step(
        "reference-rewards",
        cmd_reference_rewards,
        "draw objective.qrpo.ref_samples completions per training prompt from the reference and score them by the "
        "true reward (QRPO's quantile rewards)",
        "the model's training table: its prompts and reward standardisation",
    )

    p = step("train", cmd_train, "train one (model, method, ablation, seed) cell", cell=True)
    p.add_argument("--init", required=True, help="reference/initial model folder")
    p.add_argument("--train", required=True)
    p.add_argument("--ref", help="cached reference log-probs (methods that need them)")
    p.add_argument(
        "--ref-rewards", help="QRPO: scored reference samples per training prompt (else its own completions)"
    )
    p.add_argument("--base-train", help="the full training table the cache is aligned with (when --train is a variant)")
    p.add_argument("--eval", help="held-out table; its first prompts are used to track KL(pi_theta || pi_ref)")
    p.add_argument("--dvc-pointer", help="the prepared data's .dvc pointer: the tables read are checked against it")
    p.add_argument("--out-dir", required=True)

    p = step("generate", cmd_generate, "generate on the held-out prompts", cell=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--eval", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--samples", help="also write generate.samples_per_prompt plain samples per prompt here")

    p = step("generate-ood", cmd_generate_ood, "generate on the out-of-distribution benchmarks", cell=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--out", required=True)

    p = step("score-ood", cmd_score_ood, "programmatic OOD scores (IFEval accuracy, GSM8K exact match)", cell=True)
    p.add_argument("--generations", required=True)
    p.add_argument("--out", required=True)

    p = step("judge", cmd_judge, "pairwise win rates of RPO against each baseline, by one judge", cell=True)
    p.add_argument("--judge", required=True, help="a name under judge.judges")
    p.add_argument("--scope", choices=["in_domain", "ood"], default="in_domain")
    p.add_argument(
        "--generations",
        nargs="+",
        required=True,
        help="method=path pairs: rpo= and the systems it is compared with (generations or ood_generations)",
    )
    p.add_argument("--out", required=True)

    p = step("score", cmd_score, "score generations (BERTScore, ROUGE-L, toxicity, Distinct-2, length)", cell=True)
    p.add_argument("--generations", required=True)
    p.add_argument("--samples", help="the sampled evaluation's samples (rpo generate --samples)")
    p.add_argument("--eval", help="eval.parquet: the generations must cover each of its prompts (k samples each)")
    p.add_argument("--out", required=True)

    p = step(
        "diagnose",
        cmd_diagnose,
        "where a policy loses the optimum's gain: KL(pi* || pi_theta) on the reference's samples of test and "
        "training prompts, its implied reward, and (RPO, DRO, QRPO) the fit of its regression on the training rows",
        cell=True,
    )
    p.add_argument("--model-dir", required=True)
    p.add_argument("--test-samples", required=True, help="the reference's samples of the test prompts")
    p.add_argument("--train-samples", required=True, help="the reference's samples of training prompts")
    p.add_argument("--train", required=True, help="the run's training table")
    p.add_argument("--base-train", required=True, help="the full training table the reference cache is aligned with")
    p.add_argument("--ref", required=True, help="cached reference log-probs of the training table")
    p.add_argument("--ref-rewards", help="QRPO: scored reference samples per training prompt")
    p.add_argument("--out", required=True)

    p = step(
        "report",
        cmd_report,
        "write a table (md, csv, tex), a figure (png, pdf), the paper comparison, "
        "or the MLflow report run; each with a sidecar of run ids and md5s",
    )
    p.add_argument(
        "--what",
        required=True,
        choices=[*paper.TABLES, *paper.OPTIMUM_TABLES, *paper.FIGURES, "paper_comparison", "mlflow_run"],
    )
    p.add_argument(
        "--out-prefix", required=True, help="output path without suffix (paper_comparison, mlflow_run: the file)"
    )
    p.add_argument(
        "inputs",
        nargs="*",
        help="per-run files (scores.json, <scope>_rpo_vs_<baseline>.json, ood_scores.json, train.json, "
        "kl.csv), table CSVs (paper_comparison), or report files (mlflow_run)",
    )
    return parser


def outputs_of(args) -> list[Path]:
    """A step's outputs (a file, or a file inside an output folder): checked writable before its work starts."""
    files = [getattr(args, name, None) for name in ("out", "train_out", "out_prefix")]
    folders = [getattr(args, name, None) for name in ("out_dir",)]
    return [Path(f) for f in files if f] + [Path(d) / "probe" for d in folders if d]


def run(argv: list[str]) -> int:
    """Run one step in this process; the exit code (2: an error the user can act on, its message printed)."""
    args = build_parser().parse_args(argv)
    try:
        io.check_writable(*outputs_of(args))
        args.func(args)
    except (ConfigError, DataError, VersioningError, JudgeError, TrainingError, OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


# Steps that import no model library: with RPO_WARM=1 and no server up yet, they run in this process (a third of a
# second) and start the server in the background for the steps after them, instead of waiting ~10 s for it (the
# demo's first jobs resolve configs).
LIGHT_STEPS = {"config"}


def main(argv: list[str] | None = None) -> int:
    """`rpo`: with RPO_WARM=1, the step runs in a child of the warm server (rpo.warm), else here."""
    argv = sys.argv[1:] if argv is None else argv
    os.environ[JOB_STARTED] = repr(time.time())
    if warm.enabled() and argv[:1] and argv[0] in LIGHT_STEPS and not warm.server_up():
        warm.prestart()
    elif warm.enabled() and (code := warm.run_via_server(argv, entry="rpo.cli:run")) is not None:
        return code
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
