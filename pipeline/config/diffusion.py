"""Schema of ``game.kind: diffusion`` (pydantic only; this module never imports torch).

A diffusion game is the paper's job (Lin, Lu, Kim, Lee, ICLR 2025): train the full model θ* on all data
(or load it), prune it once (θ~*), recover the pruned model on all data, then for each coalition S
fine-tune the recovered model on S's data for K steps ("sparsified fine-tuning"), sample images from
fixed noise seeds and measure every configured property on them.

Sections (YAML keys under ``game:``)::

    kind: diffusion
    data:              where the images come from and who contributed them   (discriminated on `source`)
    model:             the denoiser + noise scheduler                          (discriminated on `kind`)
    train:             full-model training (θ*); skipped when `model.pretrained` is set
    prune:             structured magnitude pruning (ratio, importance, norm)
    recover:           recovery fine-tuning of the pruned model on all data
    finetune:          the per-coalition job (`mode`: sparsified_ft | ft | retrain, steps K, lr, ...)
    sampling:          scheduler (ddim | ddpm), steps, n_images, batch size, noise seed (shared by all S)
    properties:        list of property names (built-ins or "module:function")
    feature_extractor: what turns images into features/class probabilities     (discriminated on `kind`)
    null_model:        what v(∅) measures (random_init | base)
    device:            auto | cpu | cuda
    precision:         fp32 | fp16 | bf16 (mixed precision on GPU only)

Extension points: a new data ``source``, a new model ``kind`` or a new ``feature_extractor`` ``kind`` is one
pydantic class (a :class:`~contribshap.pipeline.config.sections.Section`) with a ``Literal`` discriminator,
declared by a use case (:mod:`contribshap.usecases`); the unions below (``DataConfig``, ``ModelConfig``,
``FeatureExtractorConfig``) are built from the built-ins and every discovered use case. Each class lists its
local paths in ``paths()`` so that :meth:`DiffusionGameConfig.missing_paths` reports every missing file at once.

May import: contracts, the config sections and the use cases' declarations (no torch).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Union

from contribshap.pipeline.config.sections import OmitNewDefaults, Section, UNetModelConfig
from contribshap.usecases import discover
from pydantic import Field, field_validator, model_validator

#: ``finetune.mode`` values: the paper's ``sparsified_ft``, plain ``ft`` of θ*, and ``retrain`` from scratch.
FINETUNE_MODES: tuple[str, ...] = ("sparsified_ft", "ft", "retrain")
BUILTIN_PROPERTIES: tuple[str, ...] = ("fid", "fid_inf", "log_fid", "kid", "inception_score", "diversity", "quality")
#: Which way each built-in property is better (the one place the driver side says it): ``"lower"`` for the
#: distances, ``"higher"`` for the scores. Credit is oriented by it (``credit = -value`` for ``"lower"``,
#: see :mod:`contribshap.pipeline.products.credit`); a property not listed here is higher-is-better unless
#: the config's top-level ``directions`` says otherwise.
PROPERTY_DIRECTIONS: dict[str, str] = {"fid": "lower", "fid_inf": "lower", "log_fid": "lower", "kid": "lower",
                                       "inception_score": "higher", "diversity": "higher", "quality": "higher"}
#: ``properties`` when a config names none (``fid_inf`` is opt-in: it costs several Fréchet distances).
DEFAULT_PROPERTIES: tuple[str, ...] = ("fid", "log_fid", "kid", "inception_score", "diversity", "quality")
"""Property names implemented in ``contribshap.workers.properties`` (a ``"module:function"`` string adds your own)."""


# ----------------------------------------------------------------------------------------------------
# data: contributor-labelled images
# ----------------------------------------------------------------------------------------------------
class PlantedContributor(Section):
    """An extra contributor added to the data on purpose, to check that valuation finds it.

    Attributes:
        kind: ``noise`` (images of i.i.d. uniform noise in [-1, 1]) or ``duplicates`` (near-copies of
            ``n_sources`` real images with small Gaussian jitter).
        name: contributor name; ids are ``planted-<name>``. The demo's harmful one contains "noise".
        n_images: number of images the contributor owns (default 180, ~one digit class).
        n_sources: for ``duplicates`` only: how many distinct real images are copied (default 5).
        jitter: for ``duplicates`` only: std of the Gaussian jitter added to each copy (default 0.05).
    """

    kind: Literal["noise", "duplicates"]
    name: str
    n_images: int = Field(180, ge=1)
    n_sources: int = Field(5, ge=1)
    jitter: float = Field(0.05, ge=0.0)


class ContributorSpec(Section):
    """One contributor of a scenario whose right answer is known by construction (``data.contributors``).

    Genuine images are drawn without replacement from the training pool (after the held-out split), one
    class after the other in turn, so contributors with the same ``classes`` have the same class mix.

    Attributes:
        name: the contributor id (letters, digits, ``_.-``; unique).
        kind: ``genuine`` (real images), ``noise`` (i.i.d. uniform noise in [-1, 1]), ``duplicates``
            (jittered copies of ``n_sources`` real images), ``copy`` (the very images of contributor
            ``of``: twins) or ``subset`` (the first ``n_images`` of ``of``'s images; default half).
        n_images: images owned (required for genuine / noise / duplicates; subset: default half of ``of``).
        classes: genuine / duplicates: draw from these digit classes only (default: every kept class).
        corruption: ``none``, ``pixel_noise`` (each pixel replaced by uniform noise with probability
            ``level``) or ``blur`` (Gaussian blur of σ = 3·``level`` pixels); applied to genuine images.
        level: corruption strength in [0, 1] (0 = clean).
        of: ``copy`` / ``subset``: the name of an earlier contributor.
        n_sources / jitter: ``duplicates``: distinct source images (default 5), std of the jitter (0.05).
    """

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["genuine", "noise", "duplicates", "copy", "subset"] = "genuine"
    n_images: int | None = Field(None, ge=1)
    classes: list[int] | None = None
    corruption: Literal["none", "pixel_noise", "blur"] = "none"
    level: float = Field(0.0, ge=0.0, le=1.0)
    of: str | None = None
    n_sources: int = Field(5, ge=1)
    jitter: float = Field(0.05, ge=0.0)

    @model_validator(mode="after")
    def _check_kind(self) -> ContributorSpec:
        if self.kind in ("copy", "subset") and self.of is None:
            raise ValueError(f"contributor {self.name!r}: kind={self.kind} needs `of: <earlier contributor name>`")
        if self.kind in ("genuine", "noise", "duplicates") and self.n_images is None:
            raise ValueError(f"contributor {self.name!r}: kind={self.kind} needs n_images")
        if self.kind not in ("copy", "subset") and self.of is not None:
            raise ValueError(f"contributor {self.name!r}: `of` is only for kind copy / subset (got kind={self.kind})")
        return self


class MergeOverlapping(Section):
    """Merge contributors whose images overlap into one player before valuation (``data.merge_overlapping``).

    Two contributors are joined (transitively) when at least ``threshold`` of either one's images have an
    exact or near copy among the other's (the overlap audit: a 64-bit difference hash within ``hamming``
    bits, confirmed by a pixel RMSE <= ``rmse``). The merged player's id is the members' ids joined with
    ``+``; it owns every image of its members (the data are unchanged, only who is paid for them).

    Attributes:
        threshold: overlap fraction in (0, 1] that joins two contributors (default 0.5).
        hamming: dHash distance in bits of a near-duplicate candidate (default 6).
        rmse: pixel RMSE (values in [-1, 1]) below which a candidate is a near duplicate (default 0.1).
    """

    threshold: float = Field(0.5, gt=0.0, le=1.0)
    hamming: int = Field(6, ge=0, le=64)
    rmse: float = Field(0.1, ge=0.0)


class DigitsSource(OmitNewDefaults):
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes; no download).

    Attributes:
        scheme: ``by_class`` (one contributor per digit class) or ``random:K`` (K contributors with
            a seeded random, near-equal split of the images).
        classes: keep only these digit classes (default: all 10). The fidelity study uses 5.
        planted: extra contributors (noise, near-duplicates), appended after the genuine ones.
        split_seed: seed of the ``random:K`` split, of the planted images and of the held-out split (default 0).
        holdout_fraction: fraction of every class held out of the contributors' data before anything else
            (default 0: none). Half of it (rounded up) is the reference set of FID/KID (``reference:
            heldout``), the other half trains the feature extractor; neither is ever a training image
            of the diffusion model. Seeded by ``split_seed``, per class, so it is the same on every worker.
        contributors: a scenario: explicit contributors (:class:`ContributorSpec`) instead of ``scheme``
            (default None: ``scheme`` decides). Planted contributors are still appended after them.
        merge_overlapping: join overlapping contributors into one player (:class:`MergeOverlapping`;
            default None: every contributor is its own player).
    """

    omit_at_default: ClassVar[tuple[str, ...]] = ("holdout_fraction", "contributors", "merge_overlapping")

    source: Literal["digits"] = "digits"
    scheme: str = "by_class"
    classes: list[int] | None = None
    planted: list[PlantedContributor] = Field(default_factory=list)
    split_seed: int = 0
    holdout_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    contributors: list[ContributorSpec] | None = None
    merge_overlapping: MergeOverlapping | None = None

    @model_validator(mode="after")
    def _check_contributors(self) -> DigitsSource:
        if self.contributors is None:
            return self
        problems = []
        if not self.contributors:
            problems.append("data.contributors is empty; list at least one contributor or remove the key")
        if self.scheme != "by_class":
            problems.append(f"data.contributors replaces data.scheme; remove scheme={self.scheme!r}")
        seen: list[str] = []
        for spec in self.contributors:
            if spec.name in seen:
                problems.append(f"data.contributors: name {spec.name!r} is used twice")
            if spec.of is not None and spec.of not in seen:
                problems.append(f"data.contributors: {spec.name!r} has of={spec.of!r}, which is not an earlier contributor")
            bad = [c for c in spec.classes or [] if self.classes is not None and c not in self.classes]
            if bad:
                problems.append(f"data.contributors: {spec.name!r} asks for classes {bad} outside data.classes")
            seen.append(spec.name)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("scheme")
    @classmethod
    def _check_scheme(cls, scheme: str) -> str:
        if scheme == "by_class" or re.fullmatch(r"random:[1-9][0-9]*", scheme):
            return scheme
        raise ValueError(f"data.scheme={scheme!r} is not valid; use 'by_class' or 'random:K' (e.g. 'random:8')")

    @field_validator("classes")
    @classmethod
    def _check_classes(cls, classes: list[int] | None) -> list[int] | None:
        if classes is not None:
            bad = [c for c in classes if c not in range(10)]
            if bad or not classes or len(set(classes)) != len(classes):
                raise ValueError(f"data.classes={classes} must be distinct digits 0..9 (non-empty)")
        return classes


class FolderSource(OmitNewDefaults):
    """A local folder of images plus a CSV mapping each file to its contributor.

    ``contributors_csv`` has a header and the columns ``file`` (path relative to ``root``) and
    ``contributor`` (id); an optional ``name`` column gives display names, and with ``labels: true`` a
    ``label`` column gives each image's class (integers or names): class-conditional data, and the classes
    the built-in ``digits_cnn`` extractor learns, so FID/KID/IS-style properties need no downloaded weights.
    Images are converted to ``channels`` channels, resized to ``image_size`` x ``image_size`` and scaled to
    [-1, 1].

    Attributes:
        root: folder with the images.
        contributors_csv: mapping file (default ``<root>/contributors.csv``).
        image_size: side in pixels after resizing (default 32).
        channels: 1 (grayscale) or 3 (RGB) (default 3).
        reference_csv: optional CSV (column ``file``, relative to ``root``) of held-out images that no
            contributor owns: the FID/KID reference set of ``reference: heldout`` (default None).
        labels: the CSV has a ``label`` column (checked when the data are loaded; default False).
        holdout_fraction: with ``labels``: fraction of every class held out of the contributors' images, as
            the digits source does (half, rounded up, the reference set of ``reference: heldout``; the rest
            trains the ``digits_cnn`` extractor); seeded by ``split_seed`` (default 0: none).
        split_seed: seed of the held-out split (default 0).
        merge_overlapping: join overlapping contributors into one player (:class:`MergeOverlapping`).
    """

    omit_at_default: ClassVar[tuple[str, ...]] = ("reference_csv", "labels", "holdout_fraction", "split_seed",
                                                  "merge_overlapping")

    source: Literal["folder"] = "folder"
    root: Path
    contributors_csv: Path | None = None
    image_size: int = Field(32, ge=4)
    channels: Literal[1, 3] = 3
    reference_csv: Path | None = None
    labels: bool = False
    holdout_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    split_seed: int = 0
    merge_overlapping: MergeOverlapping | None = None

    @model_validator(mode="after")
    def _check_holdout(self) -> FolderSource:
        if self.holdout_fraction > 0.0 and not self.labels:
            raise ValueError("data.holdout_fraction splits every class: it needs data.labels: true and a `label` "
                             "column in the CSV (or use data.reference_csv)")
        if self.holdout_fraction > 0.0 and self.reference_csv is not None:
            raise ValueError("data.holdout_fraction and data.reference_csv both name a reference set; keep one")
        return self

    def csv_path(self) -> Path:
        return self.contributors_csv if self.contributors_csv is not None else self.root / "contributors.csv"

    def paths(self) -> dict[str, Path | None]:
        return {"data.root": self.root, "data.contributors_csv": self.csv_path(), "data.reference_csv": self.reference_csv}




#: Every use case, discovered once (built-ins and those installed packages add).
USECASES = discover()

DataConfig = Annotated[
    Union[(DigitsSource, FolderSource, *(c for u in USECASES for c in u.data))],
    Field(discriminator="source"),
]


# ----------------------------------------------------------------------------------------------------
# model: denoiser + noise scheduler
# ----------------------------------------------------------------------------------------------------


ModelConfig = Annotated[
    Union[(UNetModelConfig, *(c for u in USECASES for c in u.models))],
    Field(discriminator="kind"),
]


# ----------------------------------------------------------------------------------------------------
# training stages
# ----------------------------------------------------------------------------------------------------
class OptimConfig(Section):
    """One training stage (AdamW on the DDPM noise-prediction loss).

    Attributes:
        steps: optimiser steps (0 = skip the stage).
        lr: learning rate (constant after ``warmup_steps``).
        batch_size: images per step, drawn with replacement from the stage's data.
        weight_decay: AdamW weight decay (default 0).
        warmup_steps: linear warm-up steps (default 0).
        ema_decay: if set (e.g. 0.999), keep an exponential moving average of the weights and use it
            at the end of the stage (default None: the raw weights).
    """

    steps: int = Field(..., ge=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(128, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    ema_decay: float | None = Field(None, gt=0, lt=1)


class TrainConfig(OptimConfig):
    """Full-model training θ* on all data (default 1,500 steps at lr 1e-3, batch 128)."""

    steps: int = Field(1500, ge=0)


class RecoverConfig(OptimConfig):
    """Recovery fine-tuning of the pruned model on all data (default 400 steps at lr 1e-3)."""

    steps: int = Field(400, ge=0)


class PruneConfig(Section):
    """Structured pruning with torch-pruning (the output conv is never pruned).

    Attributes:
        ratio: fraction of channels removed per layer, 0 <= ratio < 1 (paper: 0.3). 0 disables pruning.
        importance: ``magnitude`` (L-p norm of the weights, the paper's choice) or ``random``.
        norm_p: p of the magnitude norm (1 or 2; default 2).
        round_to: round every pruned channel count to a multiple of this (default: None; GroupNorm
            groups are kept consistent by torch-pruning's dependency graph either way).
        global_pruning: rank channels across layers instead of within each layer (default False).
    """

    ratio: float = Field(0.3, ge=0.0, lt=1.0)
    importance: Literal["magnitude", "random"] = "magnitude"
    norm_p: Literal[1, 2] = 2
    round_to: int | None = Field(None, ge=1)
    global_pruning: bool = False


class FinetuneConfig(OptimConfig):
    """The per-coalition job.

    Attributes:
        mode: ``sparsified_ft`` (fine-tune the pruned+recovered model: the paper's method),
            ``ft`` (fine-tune the unpruned θ*) or ``retrain`` (train from random init on S only for
            ``retrain_steps`` steps at ``retrain_lr``: the gold standard).
        steps: K, fine-tuning steps for sparsified_ft / ft (default 50).
        lr: fine-tuning learning rate (default 3e-4; docs/workers.md measures 1e-4..1e-3 for K=50).
        batch_size: images per step (default 64).
        retrain_steps: steps for ``retrain`` (default: ``train.steps``).
        retrain_lr: lr for ``retrain`` (default: ``train.lr``).
    """

    mode: Literal[FINETUNE_MODES] = "sparsified_ft"  # type: ignore[valid-type]
    steps: int = Field(50, ge=0)
    lr: float = Field(3e-4, gt=0)
    batch_size: int = Field(64, ge=1)
    retrain_steps: int | None = Field(None, ge=1)
    retrain_lr: float | None = Field(None, gt=0)


class SamplingConfig(Section):
    """Image generation for every coalition.

    Attributes:
        scheduler: ``ddim`` (deterministic, eta 0; default) or ``ddpm`` (ancestral; slow).
        steps: denoising steps (default 20; ignored for ddpm, which uses all training steps).
        n_images: images generated per evaluation (default 500).
        batch_size: images per forward pass (default 500).
        noise_seed: seed of the initial noise; shared by every coalition (common random numbers).
            Replicate r uses ``noise_seed + r``.
    """

    scheduler: Literal["ddim", "ddpm"] = "ddim"
    steps: int = Field(20, ge=1)
    n_images: int = Field(500, ge=2)
    batch_size: int = Field(500, ge=1)
    noise_seed: int = 1234


# ----------------------------------------------------------------------------------------------------
# feature extractor (FID/KID features + class probabilities)
# ----------------------------------------------------------------------------------------------------
class DigitsCNNExtractor(Section):
    """A small CNN trained on the real images during prepare (the demo's stand-in for Inception).

    Features are the ``feature_dim`` pre-ReLU activations of its penultimate layer (32 avoids singular
    covariance matrices); class probabilities come from its softmax head. The classes are
    the labels of the data source (digit classes). Its held-out accuracy is reported by prepare.

    Attributes:
        feature_dim: width of the feature layer (default 32).
        steps / lr / batch_size: training (default 600 steps, lr 3e-3, batch 128).
        test_fraction: held-out fraction for the reported accuracy (default 0.2).
    """

    kind: Literal["digits_cnn"] = "digits_cnn"
    feature_dim: int = Field(32, ge=2)
    steps: int = Field(600, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(128, ge=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)


class InceptionExtractor(Section):
    """Inception-v3 from a local clean-fid TorchScript file (``inception-2015-12-05.pt``).

    Features: the 2048-dim pool features; class probabilities: its 1008-way softmax. Images are resized to
    299x299 and scaled to [0, 255] as clean-fid does. Never downloaded.
    """

    kind: Literal["inception"] = "inception"
    weights: Path
    batch_size: int = Field(100, ge=1)

    def paths(self) -> dict[str, Path | None]:
        return {"feature_extractor.weights": self.weights}


# ----------------------------------------------------------------------------------------------------
# embedding feature extractors: CLIP / BLIP clusters (contribshap.workers.properties.embeddings)
# ----------------------------------------------------------------------------------------------------
class EmbeddingClustersExtractor(Section):
    """Image embeddings (BLIP or CLIP, a local model folder) clustered for the ``diversity`` property.

    A fixed reference set (the real training images, at most ``reference_size``) is embedded and Ward-
    clustered into ``n_clusters``; generated images go to the nearest centroid and ``diversity`` is the
    entropy (nats, at most log n_clusters) of those assignments (the paper's CelebA-HQ property).

    Attributes:
        kind: ``blip`` (``BlipModel.get_image_features``; the paper's choice) or ``clip``
            (``CLIPVisionModelWithProjection``).
        weights: the local model folder (``save_pretrained`` layout).
        n_clusters: K (default 20). reference_size: reference images (default 2,000). batch_size: 64.
    """

    kind: Literal["blip", "clip"] = "blip"
    weights: Path
    n_clusters: int = Field(20, ge=2)
    reference_size: int = Field(2000, ge=2)
    batch_size: int = Field(64, ge=1)

    def paths(self) -> dict[str, Path | None]:
        return {"feature_extractor.weights": self.weights}


FeatureExtractorConfig = Annotated[
    Union[(DigitsCNNExtractor, InceptionExtractor, EmbeddingClustersExtractor,
           *(c for u in USECASES for c in u.extractors))],
    Field(discriminator="kind"),
]


# ----------------------------------------------------------------------------------------------------
# the game
# ----------------------------------------------------------------------------------------------------
class DiffusionGameConfig(Section):
    """``game.kind: diffusion``: every setting of the prune / fine-tune / sample / measure job.

    Attributes:
        reference: which real images the reference statistics use: ``clean`` (the genuine training
            data, without planted contributors; default, kept for existing configs), ``all`` (every
            training image) or ``heldout`` (images no contributor owns and the extractor never saw:
            digits ``data.holdout_fraction`` > 0, folder ``data.reference_csv``; the valid choice, and
            the demo's). ``clean`` and ``all`` measure the model against its own training images.
        null_model: v(∅): ``random_init`` (a seeded randomly initialised model of the full architecture)
            or ``base`` (θ* itself, for settings where fine-tuning adds to a base model such as LoRA).

    Example::

        >>> DiffusionGameConfig.model_validate({"kind": "diffusion", "finetune": {"steps": 20}}).finetune.mode
        'sparsified_ft'
    """

    kind: Literal["diffusion"] = "diffusion"
    data: DataConfig = Field(default_factory=DigitsSource)
    model: ModelConfig = Field(default_factory=UNetModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    recover: RecoverConfig = Field(default_factory=RecoverConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    properties: list[str] = Field(default_factory=lambda: list(DEFAULT_PROPERTIES))
    feature_extractor: FeatureExtractorConfig = Field(default_factory=DigitsCNNExtractor)
    reference: Literal["clean", "all", "heldout"] = "clean"
    null_model: Literal["random_init", "base"] = "random_init"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"

    @model_validator(mode="before")
    @classmethod
    def _default_tags(cls, data: object) -> object:
        """Fill the discriminator of a section that omits it: source digits, model unet, extractor digits_cnn."""
        if isinstance(data, dict):
            data = dict(data)
            for key, tag, default in (("data", "source", "digits"), ("model", "kind", "unet"),
                                      ("feature_extractor", "kind", "digits_cnn")):
                if isinstance(data.get(key), dict) and tag not in data[key]:
                    data[key] = {tag: default, **data[key]}
        return data

    @field_validator("properties")
    @classmethod
    def _check_properties(cls, properties: list[str]) -> list[str]:
        if not properties:
            raise ValueError(f"properties is empty; choose from {list(BUILTIN_PROPERTIES)} or 'module:function'")
        known = (*BUILTIN_PROPERTIES, *(p for u in USECASES for p in u.properties))
        bad = [p for p in properties if p not in known and not re.fullmatch(r"[\w.]+:\w+", p)]
        if bad:
            raise ValueError(
                f"properties {bad} are unknown; choose from {list(known)} or give 'module:function'"
            )
        if len(set(properties)) != len(properties):
            raise ValueError(f"properties {properties} has duplicates; list each property once")
        return properties

    @model_validator(mode="after")
    def _check_combinations(self) -> DiffusionGameConfig:
        problems = []
        if self.model.kind == "unet" and self.data.source == "digits" and self.model.sample_size != 8:
            problems.append(f"model.sample_size={self.model.sample_size} but digits are 8x8; set it to 8")
        if self.model.kind == "unet" and self.data.source == "folder":
            if self.model.sample_size != self.data.image_size:
                problems.append(
                    f"model.sample_size={self.model.sample_size} != data.image_size={self.data.image_size}; make them equal"
                )
            if self.model.in_channels != self.data.channels:
                problems.append(
                    f"model.in_channels={self.model.in_channels} != data.channels={self.data.channels}; make them equal"
                )
        for usecase in USECASES:
            if usecase.check is not None:
                problems.extend(usecase.check(self))
        labelled = self.data.source == "digits" or (self.data.source == "folder" and self.data.labels)
        if self.feature_extractor.kind == "digits_cnn" and not labelled:
            problems.append(
                f"feature_extractor.kind=digits_cnn needs class labels (data.source=digits, or folder with "
                f"labels: true and a `label` column); data.source={self.data.source} has none: add labels or use "
                "kind: inception with a local weights file"
            )
        if self.reference == "heldout":
            has_heldout = (getattr(self.data, "holdout_fraction", 0.0) > 0.0
                           or getattr(self.data, "reference_csv", None) is not None)
            if not has_heldout:
                problems.append(
                    f"reference=heldout but data.source={self.data.source} holds no images out; set "
                    "data.holdout_fraction (digits, e.g. 0.3) or data.reference_csv (folder), or use reference: clean"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def missing_paths(self) -> list[str]:
        """Every configured local path that does not exist, as ``"<key>: <path>"`` lines (all at once)."""
        missing = []
        for section in (self.data, self.model, self.feature_extractor):
            for key, path in section.paths().items():
                if path is not None and not Path(path).expanduser().exists():
                    missing.append(f"{key}: {path}")
        return missing

    def n_contributors(self) -> int | None:
        """Number of players when the config tells it without loading images (digits; folder: reads the CSV).

        None when unknown before prepare (e.g. a missing CSV, a source without ``n_contributors``, or
        ``merge_overlapping``: how many players remain depends on the images).
        """
        data = self.data
        if getattr(data, "merge_overlapping", None) is not None:
            return None
        if isinstance(data, DigitsSource):
            if data.contributors is not None:
                genuine = len(data.contributors)
            elif data.scheme == "by_class":
                genuine = len(data.classes) if data.classes is not None else 10
            else:
                genuine = int(data.scheme.partition(":")[2])
            return genuine + len(data.planted)
        if isinstance(data, FolderSource):
            import csv

            path = data.csv_path().expanduser()
            if not path.is_file():
                return None
            with path.open(newline="") as handle:
                return len({row.get("contributor") for row in csv.DictReader(handle)})
        counter = getattr(data, "n_contributors", None)
        return counter() if callable(counter) else None

    def retrain_steps(self) -> int:
        """Steps of a ``retrain`` job (``finetune.retrain_steps`` or ``train.steps``)."""
        return self.finetune.retrain_steps if self.finetune.retrain_steps is not None else self.train.steps

    def retrain_lr(self) -> float:
        """Learning rate of a ``retrain`` job (``finetune.retrain_lr`` or ``train.lr``)."""
        return self.finetune.retrain_lr if self.finetune.retrain_lr is not None else self.train.lr
