"""Config-driven, resumable training of the signature embedding network on the CPU.

    python -m training.train --config training/configs/default.toml --run ../runs/default
    python -m training.train ... --set train.loss=triplet --set train.steps=600   # experiments

Writes to the run directory: ``train.log``, ``checkpoint.pt`` (every ``checkpoint_every`` steps, atomic,
resumed automatically), ``history.jsonl`` (validation figures), ``model.pt`` (final state dict) and
``config.toml`` (the resolved configuration), ``best.pt`` (the checkpoint with the lowest EER on the
*calibration* writers, so the validation writers stay a pure measurement). Export and calibration:
``python -m training.export`` (ships ``best.pt`` when present, ``model.pt`` with ``train.checkpoint = "last"``).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

log = logging.getLogger("training")


def load_config(path: Path, overrides: list[str]) -> dict:
    """One network's configuration: the file without its ``[ensemble]`` section (training.ship's), overrides
    ("section.key=value") applied."""
    cfg = tomllib.loads(path.read_text())
    cfg.pop("ensemble", None)
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    for item in overrides:
        key, _, raw = item.partition("=")
        section, _, name = key.partition(".")
        if section not in cfg or name not in cfg[section]:
            raise SystemExit(f"--set {item}: unknown key {key}")
        old = cfg[section][name]
        cfg[section][name] = type(old)(raw) if not isinstance(old, bool) else raw.lower() in ("1", "true", "yes")
    return cfg


def dump_toml(cfg: dict) -> str:
    lines = []
    for section, values in cfg.items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            lines.append(f"{k} = {json.dumps(v)}")
        lines.append("")
    return "\n".join(lines)


def setup_logging(run: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for old in list(root.handlers):  # a second run in the same process (training.ship) logs to its own file
        root.removeHandler(old)
        old.close()
    for h in (logging.FileHandler(run / "train.log"), logging.StreamHandler(sys.stderr)):
        h.setFormatter(fmt)
        root.addHandler(h)


def resolve_root(cfg: dict, config_path: Path) -> Path:
    root = Path(cfg["data"]["root"])
    return root if root.is_absolute() else (Path.cwd() / root).resolve()


def preprocess_spec(cfg: dict):
    """The config's ``[preprocess]`` section (any :class:`PreprocessSpec` field) over the library's defaults."""
    from sigvault.imaging import DEFAULT_SPEC, PreprocessSpec

    try:
        return PreprocessSpec.from_dict({**DEFAULT_SPEC.to_dict(), **cfg.get("preprocess", {})})
    except ValueError as exc:
        raise SystemExit(f"[preprocess] in the config: {exc}") from None


def load_splits(cfg: dict, config_path: Path):
    """-> (spec, all CanvasSet, train set, calibration set, validation set)."""
    from training.data import load_canvases, scan_dataset

    spec = preprocess_spec(cfg)
    root = resolve_root(cfg, config_path)
    cache = Path(cfg["data"]["cache_dir"])
    samples = [s for d in cfg["data"]["datasets"] for s in scan_dataset(root, d)]
    data = load_canvases(samples, spec, cache)
    if float(cfg.get("augment", {}).get("coarse_p", 0.0)) > 0:
        from training.data import coarse_canvases

        low, high = cfg["data"].get("coarse_factor", [0.25, 0.55])
        data = coarse_canvases(samples, data, spec, cache, float(low), float(high))
    if float(cfg.get("augment", {}).get("capture_p", 0.0)) > 0:
        from training.data import capture_canvases

        kinds = list(cfg["data"].get("captures", ["tinted", "line", "specks", "blurjpeg", "skew", "lowres", "cheque"]))
        data = capture_canvases(samples, data, spec, cache, kinds, int(cfg["data"].get("capture_copies", 2)))
    calib = set(cfg["data"]["calibration_writers"])
    val = set(cfg["data"]["validation_writers"])
    if calib & val:
        raise SystemExit(f"writers both in calibration and validation: {sorted(calib & val)}")
    train_w = set(data.writers.tolist()) - calib - val
    return spec, data, data.subset(train_w), data.subset(calib), data.subset(val)


def embed_all(model, canvases: np.ndarray, batch: int = 64) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(canvases), batch):
            x = torch.from_numpy(canvases[i : i + batch].astype(np.float32)).unsqueeze(1)
            out.append(model(x).numpy())
    return np.concatenate(out).astype(np.float32)


def validate(model, val, n_refs: int = 5, seeds: tuple[int, ...] = (0, 1, 2)) -> dict[str, float]:
    from sigvault.metrics import eer
    from sigvault.protocol import run_split
    from sigvault.scoring import ScoringConfig

    emb = embed_all(model, val.canvases)
    sk, rd = [], []
    for seed in seeds:
        t = run_split(emb, val.writers, val.forged, n_refs, seed, ScoringConfig())
        sk.append(eer(t.scores("genuine"), t.scores("skilled"))[0])
        rd.append(eer(t.scores("genuine"), t.scores("random"))[0])
    return {"eer_skilled": float(np.mean(sk)), "eer_random": float(np.mean(rd))}


def load_teacher(cfg: dict, spec, features: int):
    """The ``[distill]`` section: (teacher embedder, student head into its space, the section) or
    (None, None, section) when ``distill.teacher`` is empty (the default).

    The teacher is an exported model folder (e.g. the shipped ensemble), run by the product's onnxruntime
    embedder on each augmented training batch; the student's pooled features are mapped into its
    embedding space by a linear head and pulled onto it (``training.losses.distill_loss``), beside the
    usual metric-learning loss (weight ``supervised``). The student exports like any network."""
    d_cfg = {"teacher": "", "supervised": 1.0, "cosine": 10.0, "relational": 100.0, **cfg.get("distill", {})}
    if not d_cfg["teacher"]:
        return None, None, d_cfg
    from sigvault.embedder import load_embedder

    teacher = load_embedder(Path(d_cfg["teacher"]), threads=int(cfg["train"]["threads"]))
    if teacher.spec != spec:
        raise SystemExit(f"distill.teacher {d_cfg['teacher']}: its preprocessing differs from the student's "
                         f"(canvas {teacher.spec.canvas_height}x{teacher.spec.canvas_width} against "
                         f"{spec.canvas_height}x{spec.canvas_width}, or another field); train the student with "
                         "the teacher's [preprocess]")
    from training.losses import DistillHead

    log.info("distilling from %s (%s, %d-d): supervised x%g, cosine x%g, relational x%g", d_cfg["teacher"],
             teacher.model_id, teacher.dim, d_cfg["supervised"], d_cfg["cosine"], d_cfg["relational"])
    return teacher, DistillHead(features, teacher.dim), d_cfg


def atomic_save(obj, path: Path) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(cfg: dict, run: Path, config_path: Path) -> None:
    import torch

    from training.augment import augment
    from training.data import BatchSampler
    from training.losses import ArcFace, contrastive_loss, distill_loss, triplet_loss
    from training.model import build_model

    t_cfg, m_cfg, a_cfg = cfg["train"], cfg["model"], cfg["augment"]
    torch.set_num_threads(int(t_cfg["threads"]))
    torch.manual_seed(t_cfg["seed"])
    spec, _, tr, cal, val = load_splits(cfg, config_path)
    n_synth = int(cfg["data"].get("synthetic_writers", 0))
    if n_synth:
        from training.data import concat, synthetic_canvases

        synth = synthetic_canvases(n_synth, int(cfg["data"]["synthetic_genuine"]), int(cfg["data"]["synthetic_forged"]),
                                   spec, Path(cfg["data"]["cache_dir"]))
        tr = concat(tr, synth)
        log.info("added %d synthetic writers (%d images) to the training writers", n_synth, len(synth.writers))
    log.info("train: %d images of %d writers; validation: %d images of %d writers",
             len(tr.writers), len(set(tr.writers.tolist())), len(val.writers), len(set(val.writers.tolist())))
    sampler = BatchSampler(tr, t_cfg["writers_per_batch"], t_cfg["genuine_per_writer"], t_cfg["forged_per_writer"], t_cfg["seed"])
    model = build_model(m_cfg["arch"], m_cfg["embed_dim"], m_cfg["imagenet_init"], m_cfg["drop_rate"])
    head = ArcFace(m_cfg["embed_dim"], sampler.num_classes, t_cfg["scale"], t_cfg["margin"])
    teacher, d_head, d_cfg = load_teacher(cfg, spec, model.proj.in_features)
    params = list(model.parameters()) + list(head.parameters()) + (list(d_head.parameters()) if d_head else [])
    opt = torch.optim.AdamW(params, lr=t_cfg["lr"], weight_decay=t_cfg["weight_decay"])
    gen = torch.Generator().manual_seed(t_cfg["seed"])
    # weight EMA (torch's AveragedModel, batch-norm statistics averaged too): the averaged network is the one
    # evaluated, selected and saved; the raw one only takes the optimiser's steps
    ema_decay = float(t_cfg.get("ema_decay", 0.0))
    ema = None
    if ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
    kept = model if ema is None else ema.module  # what is evaluated, selected and saved
    steps = int(t_cfg["steps"])
    step, elapsed_before = 0, 0.0
    ckpt_path = run / "checkpoint.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        head.load_state_dict(ck["head"])
        if d_head is not None:
            d_head.load_state_dict(ck["distill_head"])
        opt.load_state_dict(ck["opt"])
        sampler.set_state(ck["sampler"])
        gen.set_state(ck["gen"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        step, elapsed_before = ck["step"], ck["elapsed"]
        log.info("resumed from step %d (%.1f min trained)", step, elapsed_before / 60)

    budget = t_cfg["time_budget_minutes"] * 60

    def lr_at(s: int, elapsed: float) -> float:
        """Linear warm-up, then cosine decay over whichever ends first: the steps or the time budget."""
        if s < t_cfg["warmup_steps"]:
            return t_cfg["lr"] * (s + 1) / t_cfg["warmup_steps"]
        p = max((s - t_cfg["warmup_steps"]) / max(1, steps - t_cfg["warmup_steps"]), elapsed / budget)
        return t_cfg["lr"] * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))

    t0 = time.time()
    canv = torch.from_numpy(tr.canvases.astype(np.float32))
    coarse_p = float(a_cfg.get("coarse_p", 0.0))
    coarse = None if not coarse_p or tr.coarse is None else torch.from_numpy(tr.coarse.astype(np.float32))
    capture_p = float(a_cfg.get("capture_p", 0.0))
    captured = None if not capture_p or tr.captured is None else torch.from_numpy(tr.captured.astype(np.float32))
    loss_ema = None
    d_terms: tuple[float, float] | None = None  # running cosine and relational distillation terms
    while step < steps:
        elapsed = elapsed_before + time.time() - t0
        if elapsed > budget:
            log.warning("time budget of %.0f min reached at step %d/%d", budget / 60, step, steps)
            break
        model.train()
        idx, labels, forged = sampler.next()
        x = canv[idx]
        if coarse is not None:  # a share of the images as a coarser capture would give them (training.data)
            x = torch.where((torch.rand(len(idx), generator=gen) < coarse_p)[:, None, None], coarse[idx], x)
        if captured is not None:  # a share of the images as a back office would receive them (training.data)
            copy = torch.randint(0, captured.shape[0], (len(idx),), generator=gen)
            x = torch.where((torch.rand(len(idx), generator=gen) < capture_p)[:, None, None], captured[copy, idx], x)
        x = augment(x.unsqueeze(1), a_cfg, gen)
        y = torch.from_numpy(labels)
        f = torch.from_numpy(forged)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, elapsed)
        emb, pooled = model.forward_both(x)
        if t_cfg["loss"] == "arcface":
            loss = head(emb, y)
            if t_cfg["aux_triplet"]:
                loss = loss + t_cfg["aux_triplet"] * triplet_loss(emb, y, f, 0.2)
        elif t_cfg["loss"] == "triplet":
            loss = triplet_loss(emb, y, f, t_cfg["margin"])
        elif t_cfg["loss"] == "contrastive":
            loss = contrastive_loss(emb, y, f, t_cfg["margin"])
        else:
            raise SystemExit(f"unknown loss {t_cfg['loss']!r}")
        if teacher is not None and d_head is not None:
            target = torch.from_numpy(teacher.embed(x[:, 0].numpy()))
            d_cos, d_rel = distill_loss(d_head(pooled), target)
            loss = d_cfg["supervised"] * loss + d_cfg["cosine"] * d_cos + d_cfg["relational"] * d_rel
            d_terms = (d_cos.item(), d_rel.item()) if d_terms is None else (
                0.95 * d_terms[0] + 0.05 * d_cos.item(), 0.95 * d_terms[1] + 0.05 * d_rel.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        if ema is not None:
            ema.update_parameters(model)
        step += 1
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        if step % 10 == 0:
            el = elapsed_before + time.time() - t0
            eta = el / step * (steps - step) if step else 0
            log.info("step %d/%d loss %.4f lr %.5f  %.2f s/step  elapsed %.1f min  eta %.1f min",
                     step, steps, loss_ema, lr_at(step, el), el / step if step else 0, el / 60, eta / 60)
            if d_terms is not None:
                log.info("distillation: cosine term %.4f, relational term %.5f", *d_terms)
        if step % t_cfg["checkpoint_every"] == 0 or step == steps:
            atomic_save({"model": model.state_dict(), "head": head.state_dict(), "opt": opt.state_dict(),
                         **({"distill_head": d_head.state_dict()} if d_head is not None else {}),
                         "sampler": sampler.state(), "gen": gen.get_state(), "step": step,
                         "elapsed": elapsed_before + time.time() - t0,
                         **({"ema": ema.state_dict()} if ema is not None else {})}, ckpt_path)
        if step % t_cfg["eval_every"] == 0 or step == steps:
            # model selection on the calibration writers only: the validation writers stay a pure measurement
            c = validate(kept, cal)
            v = validate(kept, val)
            record = {"step": step, "minutes": (elapsed_before + time.time() - t0) / 60, "loss": loss_ema,
                      "calibration": c, "validation": v}
            log.info("step %d: calibration EER skilled %.2f%% random %.2f%%; validation EER skilled %.2f%% random %.2f%%",
                     step, 100 * c["eer_skilled"], 100 * c["eer_random"], 100 * v["eer_skilled"], 100 * v["eer_random"])
            with open(run / "history.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
            selection = c["eer_skilled"] + c["eer_random"]
            best_file = run / "best.json"
            best = json.loads(best_file.read_text())["selection"] if best_file.exists() else float("inf")
            if selection < best:
                atomic_save(kept.state_dict(), run / "best.pt")
                best_file.write_text(json.dumps({"selection": selection, **record}))
                log.info("new best checkpoint (calibration EER sum %.4f) at step %d", selection, step)
    atomic_save(kept.state_dict(), run / "model.pt")
    meta = {"steps": step, "minutes": (elapsed_before + time.time() - t0) / 60}
    best_file = run / "best.json"
    if best_file.exists():
        meta["best"] = json.loads(best_file.read_text())
    (run / "trained.json").write_text(json.dumps(meta))
    log.info("done: %d steps in %.1f min -> %s", step, meta["minutes"], run / "model.pt")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("training/configs/default.toml"))
    ap.add_argument("--run", type=Path, default=None, help="run directory (default ../runs/<config name>)")
    ap.add_argument("--set", action="append", default=[], help="override a config value, e.g. train.loss=triplet")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.set)
    run = args.run or Path("../runs") / args.config.stem
    setup_logging(run)
    (run / "config.toml").write_text(dump_toml(copy.deepcopy(cfg)))
    train(cfg, run, args.config)


if __name__ == "__main__":
    main()
