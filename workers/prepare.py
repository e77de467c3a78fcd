"""Prepare once: θ*, θ~* (pruned), the recovered pruned model, the feature extractor, reference statistics.

Every model kind runs the same six stages; the model-specific work (what θ* is, how it is pruned, which
space the diffusion runs in) is the backend's (``contribshap.workers.backends``). Each artifact lives in
``<artifacts_dir>/<name>-<hash>`` where ``hash`` covers exactly the config sections (and upstream hashes)
it depends on, so changing ``finetune`` or ``sampling`` reuses everything, changing ``prune.ratio``
rebuilds pruned + recovered only, and a crashed prepare resumes at the first missing artifact. Every
artifact is built by :func:`stage` (temporary folder, then ``os.replace``).

Stages (numbers match :func:`prepare`)::

    0 latents      latent backends only: every training image encoded once        latents.safetensors
    1 theta_star   the full model (pixel, ldm) or LoRA (sd_lora) on all data, or a pretrained folder
    2 pruned       torch-pruning (pixel, ldm) or LoRA-rank pruning (sd_lora), ratio prune.ratio
    3 recovered    recovery fine-tuning of the pruned model on all data
    4 extractor    the feature extractor (digits CNN / Ward clusters fitted here; Inception, CLIP: paths)
    5 reference    feature mean/covariance/features of the reference images        reference.npz
                   (``reference: heldout``: images no contributor owns and the extractor never saw)
    6 stages       every property for the null, θ*, pruned and recovered models     artifact.json
    7 thumbnails   a few of each contributor's own images (the report's cards)     <k>.png, index.json
    8 overlap      exact / near-duplicate images shared between contributors        overlap.json
                   (dHash + pixel RMSE; cosine of the extractor's features)

The null model (v(∅)) is not stored: ``random_init`` is rebuilt exactly from the config seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from contribshap.pipeline.contracts.game import Contributor
from contribshap.pipeline.contracts.progress import report_progress
from contribshap.workers.artifacts import METRICS_VERSION, clean_stale_tmp, config_hash, is_done, stage
from contribshap.workers.backends import Backend, make_backend
from contribshap.workers.data import ContributorDataset, load_dataset, load_index
from contribshap.workers.measure import image_grid_png, measure_model
from contribshap.workers.properties.base import Reference
from contribshap.workers.properties.extractors import Extractor, extractor_kind
from contribshap.workers.training import resolve_device

if TYPE_CHECKING:
    from contribshap.pipeline.config.diffusion import DiffusionGameConfig

#: Own images per contributor in its thumbnail grid (evenly spread over its images).
THUMBNAIL_IMAGES = 8
#: Version of the overlap audit's defaults (part of its artifact hash).
OVERLAP_VERSION = 1
#: Fewest feature dimensions for the feature-space part of the overlap audit.
OVERLAP_MIN_FEATURES = 8
#: File of the overlap artifact (read by ``contribshap status`` and the report).
OVERLAP_JSON = "overlap.json"


# ----------------------------------------------------------------------------------------------------
# prepare and load
# ----------------------------------------------------------------------------------------------------
def artifact_paths(config: DiffusionGameConfig, backend: Backend, artifacts_dir: Path, *, seed: int) -> dict[str, Path]:
    """Folder of every artifact for ``config`` (whether or not it exists yet), in build order.

    The backend names its own artifacts and hashes (``latents``, ``theta_star``, ``pruned``,
    ``recovered``); the extractor, reference and stage values are the same for every backend.
    """
    artifacts_dir = Path(artifacts_dir)
    hashes = dict(backend.artifact_hashes())
    hashes["extractor"] = config_hash(config.data, config.feature_extractor, seed)
    hashes["reference"] = config_hash(hashes["extractor"], config.reference)
    hashes["stages"] = config_hash(hashes["recovered"], hashes["reference"], config.sampling, config.null_model,
                                   config.properties, f"metrics-{METRICS_VERSION}")
    hashes["thumbnails"] = config_hash(config.data, THUMBNAIL_IMAGES)
    hashes["overlap"] = config_hash(hashes["extractor"], OVERLAP_VERSION)
    return {name: artifacts_dir / f"{name}-{value}" for name, value in hashes.items()}


def reference_images(config: DiffusionGameConfig, dataset: ContributorDataset) -> torch.Tensor:
    """The real images the reference statistics use.

    ``heldout``: the data's held-out reference images (no contributor owns them, the extractor never saw
    them); ``clean``: the genuine training images; ``all``: every training image.
    """
    if config.reference == "heldout":
        if dataset.reference_images is None:
            raise ValueError("reference=heldout but the data source returned no held-out reference images; "
                             "set data.holdout_fraction (digits) or data.reference_csv (folder)")
        return dataset.reference_images
    if config.reference == "clean":
        return dataset.images[dataset.clean_indices()]
    if config.reference == "all":
        return dataset.images
    raise ValueError(f"reference={config.reference!r} is unknown; valid: ['heldout', 'clean', 'all']")


def make_thumbnails(dataset: ContributorDataset, folder: Path, *, n_images: int = THUMBNAIL_IMAGES) -> dict[str, Any]:
    """Stage 7: one PNG grid of up to ``n_images`` own images per contributor, and ``index.json``.

    ``index.json``: ``{"contributors": [{"id", "name", "png", "n_images", "planted"}]}`` in contributor
    order (``png``: file name in ``folder``; ``planted``: the contributor's images were planted by the data
    source, e.g. pure noise). The driver-side report reads these files and never imports torch.
    """

    owner = dataset.contributor_index.cpu().numpy()
    entries = []
    for index, contributor in enumerate(dataset.contributors):
        items = np.flatnonzero(owner == index)
        picked = np.unique(np.linspace(0, len(items) - 1, min(n_images, len(items))).round().astype(int))
        png = f"{index:05d}.png"
        (folder / png).write_bytes(image_grid_png(dataset.images[items[picked]], columns=min(4, len(picked))))
        entries.append({"id": contributor.id, "name": contributor.name, "png": png, "n_images": len(items),
                        "planted": bool(dataset.planted[items].any())})
    (folder / "index.json").write_text(json.dumps({"contributors": entries}, indent=1))
    return {"n_contributors": len(entries), "images_each": n_images}


@dataclass
class Prepared:
    """Everything a worker loads once per process (on ``device``).

    Attributes:
        backend: the loaded backend (θ*, recovered model, codec, noise scheduler).
        data: the training data in the model's space, float32 (N, C, h, w) (pixels, or cached latents).
        owner: int64 (N,), the contributor index of every item of ``data``.
        contributors: the players, in mask order.
        extractor / reference: features of generated images and the real images' statistics.
        device: where models run. paths: every artifact folder.
    """

    backend: Backend
    data: torch.Tensor
    owner: np.ndarray
    contributors: list[Contributor]
    extractor: Extractor
    reference: Reference
    device: torch.device
    paths: dict[str, Path]

    def coalition_indices(self, mask: np.ndarray) -> torch.Tensor:
        """Indices (int64 (m,)) of the items owned by the members of ``mask`` (bool (n_players,))."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(self.contributors),):
            raise ValueError(f"mask has shape {mask.shape}, expected ({len(self.contributors)},) (one entry per contributor)")
        return torch.as_tensor(np.flatnonzero(mask[self.owner]), dtype=torch.int64)


def prepare(config: DiffusionGameConfig, backend: Backend, artifacts_dir: Path, *, seed: int, progress: bool = True) -> dict[str, Any]:
    """Build every missing artifact; return a JSON-able summary (per stage: seconds, reused, numbers).

    Args:
        config: ``DiffusionGameConfig``.
        backend: the model kind's backend (``contribshap.workers.backends.make_backend``).
        artifacts_dir: ``<store>/artifacts`` (created).
        seed: the run's seed (θ* init and batches, pruning with random importance, extractor training).
        progress: show tqdm bars for the training stages.
    """

    missing = config.missing_paths()
    if missing:
        raise FileNotFoundError(f"missing local files ({len(missing)}): {'; '.join(missing)}; copy them there or fix the keys")
    Path(artifacts_dir).mkdir(parents=True, exist_ok=True)
    removed = clean_stale_tmp(artifacts_dir)
    device = resolve_device(config.device)
    paths = artifact_paths(config, backend, artifacts_dir, seed=seed)
    owner, contributors = load_index(config.data)
    summary: dict[str, Any] = {"device": str(device), "model_kind": config.model.kind, "n_images": len(owner),
                               "n_contributors": len(contributors)}
    if removed:
        summary["removed_stale_tmp"] = removed

    # 0-3. The backend's stages: (latents,) θ*, θ~*, recovered θ~*.
    report_progress("prepare: models")
    summary.update(backend.prepare(paths, lambda: load_dataset(config.data), owner, progress=progress))

    # 4. Feature extractor.
    report_progress("prepare: feature extractor")
    kind = extractor_kind(config.feature_extractor.kind)
    summary["extractor"] = stage(
        paths["extractor"],
        lambda folder: kind.fit(config.feature_extractor, load_dataset(config.data), folder, seed=seed, device=device),
    )
    extractor = kind.load(config.feature_extractor, paths["extractor"], device=device)

    # 5. Reference statistics of the real images.
    def make_reference(folder: Path) -> dict[str, Any]:
        images = reference_images(config, load_dataset(config.data))
        features = extractor(images).features
        reference = Reference(mu=features.mean(axis=0), sigma=np.atleast_2d(np.cov(features, rowvar=False)),
                              features=features, n_classes=extractor.n_classes)
        reference.save(folder / "reference.npz")
        return {"n_reference": len(images), "feature_dim": int(features.shape[1]), "set": config.reference}

    report_progress("prepare: reference statistics")
    summary["reference"] = stage(paths["reference"], make_reference)

    # 6. Every property for the null, θ*, pruned and recovered models (what the pipeline starts from).
    def make_stages(folder: Path) -> dict[str, Any]:
        backend.load(paths)
        reference = Reference.load(paths["reference"] / "reference.npz")
        values = {}
        for name in ("null", "theta_star", "pruned", "recovered"):
            values[name], _ = measure_model(config, backend, backend.stage_model(name), extractor, reference,
                                            replicate=0, device=device)
        return {"values": values}

    report_progress("prepare: properties of the prepared models")
    summary["stages"] = stage(paths["stages"], make_stages)

    # 7. A few of each contributor's own images, for the report.
    report_progress("prepare: contributor thumbnails")
    summary["thumbnails"] = stage(paths["thumbnails"], lambda folder: {
        **make_thumbnails(load_dataset(config.data), folder), "folder": paths["thumbnails"].name})

    # 8. Images shared between contributors (exact, near by perceptual hash, near in the extractor's features).
    report_progress("prepare: overlap audit")
    summary["overlap"] = stage(paths["overlap"], lambda folder: {
        **make_overlap(load_dataset(config.data), extractor, folder), "folder": paths["overlap"].name})
    return summary


def make_overlap(dataset: ContributorDataset, extractor: Extractor | None, folder: Path) -> dict[str, Any]:
    """Stage 8: ``overlap.json`` (:func:`contribshap.workers.audit.overlap_table`) of the players' images."""
    from contribshap.workers.audit import MAX_NEAR_IMAGES, overlap_table

    images = dataset.images
    features = None
    if extractor is not None and len(images) <= MAX_NEAR_IMAGES:
        features = np.concatenate([extractor(images[b : b + 512]).features for b in range(0, len(images), 512)])
        if features.ndim != 2 or features.shape[1] < OVERLAP_MIN_FEATURES:
            features = None  # a score, not an embedding (e.g. an aesthetic predictor): cosine says nothing
    table = overlap_table(images.cpu().numpy(), dataset.contributor_index.cpu().numpy(), dataset.contributors,
                          features=features)
    (folder / OVERLAP_JSON).write_text(json.dumps(table, indent=1))
    return {"pairs": len(table["pairs"]), "max_fraction": max(
        (max(p["fraction_a"], p["fraction_b"]) for p in table["pairs"]), default=0.0)}


def load_prepared(config: DiffusionGameConfig, artifacts_dir: Path, *, seed: int, backend: Backend | None = None) -> Prepared:
    """Run :func:`prepare` if needed (idempotent), then load every artifact once onto the configured device.

    Args:
        config: ``DiffusionGameConfig``. artifacts_dir: ``<store>/artifacts``. seed: the run's seed.
        backend: the backend to load into (default: a new one for ``config.model.kind``).
    """
    if backend is None:
        backend = make_backend(config, seed=seed)
    paths = artifact_paths(config, backend, artifacts_dir, seed=seed)
    if any(is_done(path) is None for path in paths.values()):
        prepare(config, backend, artifacts_dir, seed=seed, progress=False)
    device = resolve_device(config.device)
    backend.load(paths)
    owner, contributors = load_index(config.data)
    return Prepared(
        backend=backend,
        data=backend.training_data(paths, lambda: load_dataset(config.data), owner),
        owner=owner,
        contributors=list(contributors),
        extractor=extractor_kind(config.feature_extractor.kind).load(config.feature_extractor, paths["extractor"], device=device),
        reference=Reference.load(paths["reference"] / "reference.npz"),
        device=device,
        paths=paths,
    )
