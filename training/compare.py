"""Compare losses and initialisations with equal budgets, measured on the validation writers.

    python -m training.compare --steps 220 --eval-every 50 --root ../runs/compare --splits 5

For every variant (``--variants``, default all of :data:`VARIANTS`), in order:

1. trains ``python -m training.train`` with the default config and the variant's ``--set`` overrides plus
   the shared budget (same ``train.steps``, ``eval_every`` / ``checkpoint_every``, warm-up scaled from the
   config's ratio) in ``<root>/<variant>``; an unfinished run resumes from its ``checkpoint.pt``;
2. exports the selected checkpoint (``best.pt``: lowest EER on the calibration writers) with
   ``python -m training.export --out <root>/<variant>/export``, never into ``sigvault/weights``;
3. measures the exported model with the product's own ``sigvault.evaluation.run_evaluation`` on the
   validation writers (``--references`` 5, ``--splits``, seed 0), as ``training/card.py`` does, into
   ``<root>/<variant>/eval.json`` (plots and report in ``<root>/<variant>/eval/``).

Each stage is skipped when its output exists, so the command can be rerun after an interruption. A run dir
trained with another configuration is refused rather than mixed. Prints a Markdown table and writes
``<root>/compare.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from training.train import dump_toml, load_config

# name -> (loss label, init label, --set overrides on top of the default config)
# The loss and initialisation variants train on the scans alone (data.synthetic_writers=0, whatever the
# default config says), so that they compare with each other and with arcface-synth.
REAL = "data.synthetic_writers=0"
VARIANTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "arcface": ("arcface + 0.5 triplet", "imagenet", (REAL,)),
    "triplet": ("triplet (margin 0.3)", "imagenet", (REAL, "train.loss=triplet", "train.aux_triplet=0")),
    # contrastive_loss hinges negatives at euclidean 2 * margin; the default 0.3 stops pushing at cosine
    # 0.82, above where genuine pairs of the shipped model sit (~0.55), so 0.5 (euclidean 1, cosine 0.5)
    "contrastive": ("contrastive (margin 0.5)", "imagenet",
                    (REAL, "train.loss=contrastive", "train.aux_triplet=0", "train.margin=0.5")),
    "arcface-scratch": ("arcface + 0.5 triplet", "scratch", (REAL, "model.imagenet_init=false")),
    # 60 synthetic writers (sigvault.synth) as extra classes, each with imitations as hard negatives
    "arcface-synth": ("arcface + 0.5 triplet, +60 synthetic writers", "imagenet", ("data.synthetic_writers=60",)),
    # architectures, all from scratch (ImageNet weights exist here for efficientnet_lite0 only), against
    # arcface-scratch; their CPU speed: benchmarks/arch_speed.py
    "mobilenetv3-small-scratch": ("arcface + 0.5 triplet, mobilenetv3_small_100", "scratch",
                                  (REAL, "model.arch=mobilenetv3_small_100", "model.imagenet_init=false")),
    "mobilenetv3-large-scratch": ("arcface + 0.5 triplet, mobilenetv3_large_100", "scratch",
                                  (REAL, "model.arch=mobilenetv3_large_100", "model.imagenet_init=false")),
    "resnet18-scratch": ("arcface + 0.5 triplet, resnet18", "scratch",
                         (REAL, "model.arch=resnet18", "model.imagenet_init=false")),
}
COLUMNS = ("eer_skilled", "eer_random", "frr", "far_skilled", "far_random", "refer_rate")
HEADERS = ("validation EER skilled", "EER random", "FRR", "FAR skilled", "FAR random", "refer rate")
PROTECTED = Path(__file__).resolve().parents[1] / "sigvault" / "weights"


def budget_overrides(steps: int, eval_every: int, base_steps: int, base_warmup: int) -> list[str]:
    """The shared budget: same steps for every variant, warm-up in the config's proportion."""
    warmup = max(1, round(base_warmup * steps / base_steps))
    return [f"train.steps={steps}", f"train.eval_every={eval_every}", f"train.checkpoint_every={eval_every}",
            f"train.warmup_steps={warmup}"]


def overrides_for(variant: str, budget: list[str]) -> list[str]:
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return list(VARIANTS[variant][2]) + budget


def train_command(config: Path, run: Path, overrides: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "training.train", "--config", str(config), "--run", str(run)]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def export_command(run: Path, out: Path, variant: str) -> list[str]:
    if out.resolve() == PROTECTED or PROTECTED in out.resolve().parents:
        raise SystemExit(f"{out}: refusing to export into the shipped weights")
    return [sys.executable, "-m", "training.export", "--run", str(run), "--out", str(out), "--name", f"compare-{variant}"]


def pct(d: dict, key: str) -> str:
    v, s = d.get(key), d.get(f"{key}_std")
    return "n/a" if v is None else f"{100 * v:.1f} ± {100 * (s or 0):.1f}"


def markdown(rows: list[dict]) -> str:
    """mean ± std over the evaluation splits, %; steps (the checkpoint selected on calibration writers)."""
    lines = ["| variant | loss | init | steps (selected) | minutes | " + " | ".join(HEADERS) + " |",
             "|---" * (5 + len(HEADERS)) + "|"]
    for r in rows:
        e = r["evaluation"]
        lines.append(f"| {r['variant']} | {r['loss']} | {r['init']} | {r['steps']} ({r['selected_step']}) | "
                     f"{r['minutes']:.1f} | " + " | ".join(pct(e, k) for k in COLUMNS) + " |")
    return "\n".join(lines)


def run_stage(cmd: list[str], log_path: Path) -> None:
    print(f"$ {shlex.join(cmd)}  (log: {log_path})", flush=True)
    with open(log_path, "a") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if rc:
        raise SystemExit(f"{cmd[2]} failed with exit code {rc}; see {log_path}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("training/configs/default.toml"))
    ap.add_argument("--root", type=Path, default=Path("../runs/compare"))
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    ap.add_argument("--steps", type=int, required=True, help="training steps, the same for every variant")
    ap.add_argument("--eval-every", type=int, default=50, help="calibration check / checkpoint interval")
    ap.add_argument("--splits-dir", type=Path, default=Path("../cache/splits"))
    ap.add_argument("--references", type=int, default=5)
    ap.add_argument("--splits", type=int, default=5)
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    base = load_config(args.config, [])
    budget = budget_overrides(args.steps, args.eval_every, base["train"]["steps"], base["train"]["warmup_steps"])
    for v in variants:
        overrides_for(v, budget)  # refuse unknown names before hours of training
    args.root.mkdir(parents=True, exist_ok=True)
    rows = []
    for v in variants:
        run, sets = args.root / v, overrides_for(v, budget)
        cfg_text = dump_toml(load_config(args.config, sets))
        done = run / "trained.json"
        if (run / "config.toml").exists() and (run / "config.toml").read_text() != cfg_text:
            raise SystemExit(f"{run} was trained with another configuration; use another --root or remove it")
        if done.exists() and json.loads(done.read_text())["steps"] == args.steps:
            print(f"[{v}] trained: skipping", flush=True)
        else:
            run.mkdir(parents=True, exist_ok=True)
            run_stage(train_command(args.config, run, sets), run / "compare-train.log")
        trained = json.loads(done.read_text())

        out = run / "export"
        if (out / "model_card.json").exists() and (out / "model_card.json").stat().st_mtime >= done.stat().st_mtime:
            print(f"[{v}] exported: skipping", flush=True)
        else:
            t0 = time.time()
            run_stage(export_command(run, out, v), run / "compare-export.log")
            (run / "export.json").write_text(json.dumps({"seconds": round(time.time() - t0, 1)}))

        eval_file = run / "eval.json"
        want = {"references": args.references, "splits": args.splits, "seed": 0}
        prior = json.loads(eval_file.read_text()) if eval_file.exists() else None
        if (prior and {k: prior.get(k) for k in want} == want
                and eval_file.stat().st_mtime >= (out / "model_card.json").stat().st_mtime):
            print(f"[{v}] evaluated: skipping", flush=True)
            report = prior
        else:
            from sigvault.embedder import load_embedder
            from sigvault.evaluation import run_evaluation

            t0 = time.time()
            rep = run_evaluation(args.splits_dir / "validation", embedder=load_embedder(out, threads=2),
                                 references=args.references, splits=args.splits, seed=0, out_dir=run / "eval")
            report = {**rep.to_json(), "seconds": round(time.time() - t0, 1)}
            eval_file.write_text(json.dumps(report, indent=2) + "\n")
        best = trained.get("best", {})
        rows.append({
            "variant": v, "loss": VARIANTS[v][0], "init": VARIANTS[v][1], "overrides": sets,
            "steps": trained["steps"], "minutes": round(trained["minutes"], 1),
            "selected_step": best.get("step", trained["steps"]),
            "calibration_at_selected": best.get("calibration"),
            "evaluation": {k: report.get(k) for k in report if k not in ("per_split", "probes", "confusion")},
            "per_split": report.get("per_split"),
            "run": str(run), "export": str(out),
        })
        print(f"[{v}] validation EER skilled {pct(report, 'eer_skilled')} %, random {pct(report, 'eer_random')} %", flush=True)

    cmd = "python -m training.compare " + shlex.join(argv if argv is not None else sys.argv[1:])
    table = markdown(rows)
    (args.root / "compare.json").write_text(json.dumps({"command": cmd, "validation_writers": str(args.splits_dir / "validation"),
                                                         "references": args.references, "splits": args.splits, "seed": 0,
                                                         "variants": rows, "table": table}, indent=2) + "\n")
    print("\n" + table)


if __name__ == "__main__":
    main()
