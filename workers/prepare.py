"""Prepare once: θ*, θ~* (pruned), the recovered pruned model, the feature extractor, reference statistics.

Each artifact lives in ``<artifacts_dir>/<name>-<hash>`` where ``hash`` covers exactly the config sections
(and upstream hashes) it depends on, so changing ``finetune`` or ``sampling`` reuses everything, changing
``prune.ratio`` rebuilds pruned + recovered only, and a crashed prepare resumes at the first missing
artifact. Artifacts are written to a temporary folder and moved into place with ``os.replace``.

Stages (numbers match :func:`prepare`)::

    1 theta_star   train the full model on all data (or take model.pretrained)       model folder
    2 pruned       torch-pruning, ratio prune.ratio                                  model folder + prune.json
    3 recovered    recovery fine-tuning of the pruned model on all data              model folder + prune.json
    4 extractor    the feature extractor (digits CNN trained here; Inception: a path)
    5 reference    feature mean/covariance/features of the reference images        reference.npz
    6 stage values every property for the null, θ*, pruned and recovered models     stages.json

The null model (v(∅)) is not stored: ``random_init`` is rebuilt exactly from the config seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from contribshap.workers.data import ContributorDataset, load_dataset
from contribshap.workers.models import build_model, build_scheduler, count_parameters, load_model, save_model
from contribshap.workers.properties import Reference
from contribshap.workers.properties.extractors import Extractor, extractor_kind
from contribshap.workers.training import resolve_device, train

ARTIFACT_JSON = "artifact.json"


def config_hash(*parts: Any) -> str:
    """12 hex chars of sha256 over the JSON of ``parts`` (pydantic models are dumped first)."""
    dumped = [p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts]
    return hashlib.sha256(json.dumps(dumped, sort_keys=True, default=str).encode()).hexdigest()[:12]


def artifact_paths(config: Any, artifacts_dir: Path, *, seed: int) -> dict[str, Path]:
    """Folder of every artifact for ``config`` (whether or not it exists yet)."""
    artifacts_dir = Path(artifacts_dir)
    if config.model.pretrained is not None:
        theta = config_hash("pretrained", config.model)
    else:
        theta = config_hash(config.data, config.model, config.train, seed)
    pruned = config_hash(theta, config.prune, seed)
    recovered = config_hash(pruned, config.recover, config.data, seed)
    extractor = config_hash(config.data, config.feature_extractor, seed)
    reference = config_hash(extractor, config.reference)
    stages = config_hash(recovered, reference, config.sampling, config.null_model, config.properties)
    return {
        "theta_star": artifacts_dir / f"theta_star-{theta}",
        "pruned": artifacts_dir / f"pruned-{pruned}",
        "recovered": artifacts_dir / f"recovered-{recovered}",
        "extractor": artifacts_dir / f"extractor-{extractor}",
        "reference": artifacts_dir / f"reference-{reference}",
        "stages": artifacts_dir / f"stages-{stages}",
    }


def _done(folder: Path) -> dict[str, Any] | None:
    path = folder / ARTIFACT_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def _build(folder: Path, make: Any) -> dict[str, Any]:
    """Run ``make(tmp_folder) -> summary`` unless ``folder`` is complete; publish atomically."""
    existing = _done(folder)
    if existing is not None:
        return {**existing, "reused": True}
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    start = time.perf_counter()
    summary = make(tmp)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    (tmp / ARTIFACT_JSON).write_text(json.dumps(summary, indent=1, default=str))
    try:
        os.replace(tmp, folder)
    except OSError:  # another worker published it first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return {**(_done(folder) or summary), "reused": True}
    return {**summary, "reused": False}


def reference_images(config: Any, dataset: ContributorDataset) -> torch.Tensor:
    """The real images the reference statistics use: all, or only genuine ones (``reference: clean``)."""
    if config.reference == "clean":
        return dataset.images[dataset.clean_indices()]
    if config.reference == "all":
        return dataset.images
    raise ValueError(f"reference={config.reference!r} is unknown; valid: ['clean', 'all']")


def null_model(config: Any, theta_star: torch.nn.Module, *, seed: int) -> torch.nn.Module:
    """v(∅)'s model: ``random_init`` (seeded full architecture) or ``base`` (θ*)."""
    if config.null_model == "random_init":
        return build_model(config.model, seed=seed + 7919)
    if config.null_model == "base":
        return theta_star
    raise ValueError(f"null_model={config.null_model!r} is unknown; valid: ['random_init', 'base']")


@dataclass
class Prepared:
    """Everything a worker loads once per process (on ``device``)."""

    dataset: ContributorDataset
    noise_scheduler: Any
    theta_star: torch.nn.Module
    recovered: torch.nn.Module
    extractor: Extractor
    reference: Reference
    device: torch.device
    paths: dict[str, Path]


def prepare(config: Any, artifacts_dir: Path, *, seed: int, progress: bool = True) -> dict[str, Any]:
    """Build every missing artifact; return a JSON-able summary (per stage: seconds, reused, numbers).

    Args:
        config: ``DiffusionGameConfig``.
        artifacts_dir: ``<store>/artifacts`` (created).
        seed: the run's seed (θ* init and batches, pruning with random importance, extractor training).
        progress: show tqdm bars for the training stages.
    """
    missing = config.missing_paths()
    if missing:
        raise FileNotFoundError(f"missing local files: {'; '.join(missing)}")
    device = resolve_device(config.device)
    paths = artifact_paths(config, artifacts_dir, seed=seed)
    Path(artifacts_dir).mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(config.data)
    noise_scheduler = build_scheduler(config.model)
    summary: dict[str, Any] = {"device": str(device), "n_images": len(dataset), "n_contributors": len(dataset.contributors)}

    # 1. θ*: the full model on all data (or the pretrained folder).
    def make_theta(folder: Path) -> dict[str, Any]:
        if config.model.pretrained is not None:
            model = load_model(config.model, Path(config.model.pretrained))
            stats = {"source": str(config.model.pretrained)}
        else:
            model = build_model(config.model, seed=seed).to(device)
            run = train(model, noise_scheduler, dataset.images, config.train, seed=seed, device=device,
                        precision=config.precision, progress="prepare 1/6 train θ*" if progress else None)
            stats = {"steps": run.steps, "final_loss": run.final_loss}
        save_model(config.model, model.cpu(), folder)
        return {**stats, "parameters": count_parameters(model)}

    summary["theta_star"] = _build(paths["theta_star"], make_theta)
    theta_star = load_model(config.model, paths["theta_star"])

    # 2. θ~*: structured pruning.
    def make_pruned(folder: Path) -> dict[str, Any]:
        from contribshap.workers.pruning import prune_model, save_pruned

        model = load_model(config.model, paths["theta_star"])
        prune_model(model, config.prune, seed=seed)
        save_pruned(model, folder, model_config=config.model, prune=config.prune, base_folder=paths["theta_star"])
        return {"ratio": config.prune.ratio, "parameters": count_parameters(model),
                "parameters_before": count_parameters(theta_star)}

    summary["pruned"] = _build(paths["pruned"], make_pruned)

    # 3. Recovery fine-tuning of θ~* on all data.
    def make_recovered(folder: Path) -> dict[str, Any]:
        from contribshap.workers.pruning import save_pruned

        model = load_model(config.model, paths["pruned"]).to(device)
        run = train(model, noise_scheduler, dataset.images, config.recover, seed=seed + 1, device=device,
                    precision=config.precision, progress="prepare 3/6 recover" if progress else None)
        save_pruned(model.cpu(), folder, model_config=config.model, prune=config.prune, base_folder=paths["theta_star"])
        return {"steps": run.steps, "final_loss": run.final_loss, "parameters": count_parameters(model)}

    summary["recovered"] = _build(paths["recovered"], make_recovered)

    # 4. Feature extractor.
    kind = extractor_kind(config.feature_extractor.kind)
    summary["extractor"] = _build(
        paths["extractor"], lambda folder: kind.fit(config.feature_extractor, dataset, folder, seed=seed, device=device)
    )
    extractor = kind.load(config.feature_extractor, paths["extractor"], device=device)

    # 5. Reference statistics of the real images.
    def make_reference(folder: Path) -> dict[str, Any]:
        import numpy as np

        images = reference_images(config, dataset)
        features = extractor(images).features
        reference = Reference(mu=features.mean(axis=0), sigma=np.cov(features, rowvar=False), features=features,
                              n_classes=extractor.n_classes)
        reference.save(folder / "reference.npz")
        return {"n_reference": len(images), "feature_dim": int(features.shape[1]), "set": config.reference}

    summary["reference"] = _build(paths["reference"], make_reference)

    # 6. Every property for the null, θ*, pruned and recovered models (what the pipeline starts from).
    def make_stages(folder: Path) -> dict[str, Any]:
        from contribshap.workers.game import measure_model

        reference = Reference.load(paths["reference"] / "reference.npz")
        models = {
            "null": null_model(config, theta_star, seed=seed),
            "theta_star": theta_star,
            "pruned": load_model(config.model, paths["pruned"]),
            "recovered": load_model(config.model, paths["recovered"]),
        }
        values = {}
        for name, model in models.items():
            measured, _ = measure_model(config, model.to(device), noise_scheduler, extractor, reference,
                                        replicate=0, device=device, image_shape=tuple(dataset.images.shape[1:]))
            values[name] = measured
        return {"values": values}

    summary["stages"] = _build(paths["stages"], make_stages)
    return summary


def load_prepared(config: Any, artifacts_dir: Path, *, seed: int) -> Prepared:
    """Run :func:`prepare` if needed (idempotent), then load every artifact once onto the configured device."""
    paths = artifact_paths(config, artifacts_dir, seed=seed)
    if any(_done(path) is None for path in paths.values()):
        prepare(config, artifacts_dir, seed=seed, progress=False)
    device = resolve_device(config.device)
    extractor = extractor_kind(config.feature_extractor.kind).load(config.feature_extractor, paths["extractor"], device=device)
    return Prepared(
        dataset=load_dataset(config.data),
        noise_scheduler=build_scheduler(config.model),
        theta_star=load_model(config.model, paths["theta_star"]).to(device).eval(),
        recovered=load_model(config.model, paths["recovered"]).to(device).eval(),
        extractor=extractor,
        reference=Reference.load(paths["reference"] / "reference.npz"),
        device=device,
        paths=paths,
    )
