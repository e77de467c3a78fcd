"""Contributor-labelled image datasets.

A :class:`ContributorDataset` is a tensor of images plus, for every image, the index of the contributor
who owns it. Sources are registered by name in :data:`contribshap.workers.registry.SOURCES`;
:func:`load_dataset` dispatches on ``config.source``. Built-in sources:

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images; no download). Schemes ``by_class`` (one
  contributor per digit) and ``random:K``, or a scenario's explicit ``contributors`` (twins, subsets,
  graded quality and quantity, near-duplicates, noise: :func:`scenario_contributors`); optional planted
  contributors (``noise``, ``duplicates``); an optional seeded per-class held-out split
  (``holdout_fraction``: reference images + the extractor's training images, :func:`holdout_split`).
- ``folder``: a local folder of images plus ``contributors.csv`` (columns ``file,contributor[,name][,label]``),
  optionally a ``reference_csv`` of held-out reference images, or (with ``labels: true``) a seeded
  per-class held-out split like the digits' (``holdout_fraction``).

Any source with ``merge_overlapping`` set has its overlapping contributors joined into one player after
loading (:func:`merge_overlapping`, the overlap audit of :mod:`contribshap.workers.audit`).

The use-case sources (``cifar100``, ``celebahq``, ``artbench``) live in their use cases
(``contribshap.usecases``). A source is ``loader(config) -> ContributorDataset``; a source whose images are
expensive to decode also registers an index ``reader(config) -> (owner int64 (N,), contributors)`` in
:data:`contribshap.workers.registry.INDEXES`, so that workers learn who owns what without reading any image.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from contribshap.pipeline.contracts.game import Contributor
from contribshap.pipeline.contracts.keys import PLANTED_PREFIX

if TYPE_CHECKING:
    from contribshap.pipeline.config.diffusion import (
        ContributorSpec,
        DigitsSource,
        FolderSource,
        PlantedContributor,
    )
    from contribshap.pipeline.config.sections import Section

SourceLoader = Callable[[Any], "ContributorDataset"]
IndexReader = Callable[[Any], "tuple[np.ndarray, list[Contributor]]"]


@dataclass
class ContributorDataset:
    """Images with one owner each.

    Attributes:
        images: float32 tensor, shape (N, C, H, W), values in [-1, 1].
        contributor_index: int64 tensor, shape (N,); ``contributor_index[i]`` indexes ``contributors``.
        contributors: the players, in mask order (every one owns >= 1 image).
        labels: optional int64 tensor (N,) of class labels (digits: the digit; used to train the demo's
            classifier), or None.
        planted: bool tensor (N,), True for images of planted contributors and corrupted images (excluded
            from the ``clean`` reference set).
        conditioning: optional per-image conditioning (e.g. prompts for text-to-image), or None.
        reference_images: optional float32 (M, C, H, W), held-out images no contributor owns (the FID/KID
            reference of ``reference: heldout``), or None.
        extractor_images / extractor_labels: optional held-out images (M', C, H, W) and their int64 labels
            (M',) that train the feature extractor instead of the contributors' images, or None.
    """

    images: torch.Tensor
    contributor_index: torch.Tensor
    contributors: list[Contributor]
    labels: torch.Tensor | None = None
    planted: torch.Tensor | None = None
    conditioning: Any = None
    reference_images: torch.Tensor | None = None
    extractor_images: torch.Tensor | None = None
    extractor_labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.contributor_index.shape != (n,):
            raise ValueError(f"contributor_index has shape {tuple(self.contributor_index.shape)}, expected ({n},)")
        counts = torch.bincount(self.contributor_index, minlength=len(self.contributors))
        empty = [c.id for c, k in zip(self.contributors, counts.tolist(), strict=True) if k == 0]
        if empty:
            raise ValueError(f"contributors {empty} own no images; remove them or give them data")
        if self.planted is None:
            self.planted = torch.zeros(n, dtype=torch.bool)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def coalition_indices(self, mask: np.ndarray) -> torch.Tensor:
        """Indices (int64, shape (m,)) of the images owned by the members of ``mask`` (bool, (n_players,))."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(self.contributors),):
            raise ValueError(f"mask has shape {mask.shape}, expected ({len(self.contributors)},) (one entry per contributor)")
        members = torch.as_tensor(np.flatnonzero(mask), dtype=torch.int64)
        return torch.nonzero(torch.isin(self.contributor_index, members), as_tuple=False).flatten()

    def clean_indices(self) -> torch.Tensor:
        """Indices of the genuine (non-planted) images."""
        return torch.nonzero(~self.planted, as_tuple=False).flatten()


def load_index(config: Section) -> tuple[np.ndarray, list[Contributor]]:
    """(owner int64 (N,), contributors) of the data section ``config``, in the order of :func:`load_dataset`.

    Uses the source's registered index reader when it has one, else loads the dataset (cached per process).
    """
    from contribshap.workers.registry import INDEXES

    if config.source in INDEXES and getattr(config, "merge_overlapping", None) is None:
        reader = INDEXES.get(config.source)
        owner, contributors = reader(config)
        return np.asarray(owner, dtype=np.int64), list(contributors)
    dataset = load_dataset(config)
    return dataset.contributor_index.cpu().numpy().astype(np.int64), list(dataset.contributors)


def load_dataset(config: Section) -> ContributorDataset:
    """Load the dataset described by ``config`` (a data section of ``DiffusionGameConfig``), cached per process."""
    return _load_cached(type(config), config.model_dump_json())


@functools.lru_cache(maxsize=4)
def _load_cached(config_type: type, config_json: str) -> ContributorDataset:
    config = config_type.model_validate_json(config_json)
    from contribshap.workers.registry import SOURCES

    dataset = SOURCES.get(config.source)(config)
    merge = getattr(config, "merge_overlapping", None)
    return dataset if merge is None else merge_overlapping(dataset, merge)


def merge_overlapping(dataset: ContributorDataset, merge: Any) -> ContributorDataset:
    """``dataset`` with the contributors whose images overlap (``merge.threshold``, ``hamming``, ``rmse``)
    joined into one player each; the images are unchanged."""
    from contribshap.workers.audit import merge_contributors, merge_groups, overlap_table

    owner = dataset.contributor_index.cpu().numpy()
    table = overlap_table(dataset.images.cpu().numpy(), owner, dataset.contributors, hamming=merge.hamming,
                          rmse=merge.rmse)
    groups = merge_groups(np.asarray(table["near_fraction"]), merge.threshold)
    if all(len(g) == 1 for g in groups):
        return dataset
    new_owner, contributors = merge_contributors(owner, dataset.contributors, groups)
    dataset.contributor_index = torch.from_numpy(new_owner)
    dataset.contributors = contributors
    return dataset


# ----------------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------------
_HOLDOUT_STREAM = 7919  # the held-out split's own random stream: schemes and planted images keep theirs


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class seeded split of indices into (train, extractor, reference), each sorted, int64.

    Of class c's n_c images, ``round(fraction * n_c)`` are held out: the first ceil(half) of a seeded
    permutation are reference images, the rest extractor images; the others stay training images. The
    three index sets are disjoint and cover ``range(len(labels))``; ``fraction = 0`` holds nothing out.
    """
    rng = np.random.default_rng([seed, _HOLDOUT_STREAM])
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for c in sorted(set(labels.tolist())):
        order = rng.permutation(np.flatnonzero(labels == c))
        n_hold = round(fraction * len(order))
        n_reference = n_hold - n_hold // 2
        parts[2].append(order[:n_reference])
        parts[1].append(order[n_reference:n_hold])
        parts[0].append(order[n_hold:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)  # type: ignore[return-value]


def corrupt(images: np.ndarray, kind: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """Images (n, C, H, W) in [-1, 1] corrupted at strength ``level`` in [0, 1].

    ``pixel_noise``: each pixel replaced by uniform noise in [-1, 1] with probability ``level``.
    ``blur``: Gaussian blur of σ = 3·``level`` pixels over H and W. ``none`` or level 0: unchanged.
    """
    if kind == "none" or level == 0.0:
        return images
    if kind == "pixel_noise":
        replace = rng.random(images.shape) < level
        return np.where(replace, rng.uniform(-1.0, 1.0, size=images.shape), images).astype(np.float32)
    if kind == "blur":
        from scipy.ndimage import gaussian_filter

        return gaussian_filter(images, sigma=(0, 0, 3.0 * level, 3.0 * level), mode="nearest").astype(np.float32)
    raise ValueError(f"corruption={kind!r} is unknown; valid: ['none', 'pixel_noise', 'blur']")


def _draw_genuine(pools: dict[int, list[int]], classes: list[int], n: int, name: str) -> np.ndarray:
    """``n`` pool indices taken without replacement, one class after the other in turn (same class mix)."""
    taken = []
    for j in range(n):
        c = classes[j % len(classes)]
        if not pools[c]:
            raise ValueError(f"contributor {name!r}: class {c} has no training images left after the earlier "
                             "contributors; lower n_images or hold fewer images out")
        taken.append(pools[c].pop())
    return np.asarray(taken, dtype=np.int64)


def scenario_contributors(specs: list[Any], images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
                          ) -> list[tuple[Contributor, np.ndarray, np.ndarray, np.ndarray]]:
    """The contributors of ``data.contributors``: [(contributor, images, labels, planted)], in spec order.

    Genuine images come from per-class pools shuffled once by ``rng`` and are never given to two genuine
    contributors; ``copy`` repeats another contributor's images exactly, ``subset`` its first n. Labels
    are -1 for noise, duplicates and corrupted images (they never train the extractor), and such images
    are marked planted.
    """
    classes_all = sorted(set(labels.tolist()))
    pools = {c: rng.permutation(np.flatnonzero(labels == c)).tolist() for c in classes_all}
    made: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    out = []
    for spec in specs:
        if spec.kind == "genuine":
            taken = _draw_genuine(pools, spec.classes or classes_all, spec.n_images, spec.name)
            clean = spec.corruption == "none" or spec.level == 0.0
            part = (corrupt(images[taken], spec.corruption, spec.level, rng),
                    labels[taken] if clean else np.full(len(taken), -1), np.full(len(taken), not clean))
        elif spec.kind == "noise":
            noise = rng.uniform(-1.0, 1.0, size=(spec.n_images, *images.shape[1:])).astype(np.float32)
            part = (noise, np.full(spec.n_images, -1), np.ones(spec.n_images, bool))
        elif spec.kind == "duplicates":
            sources = images[_draw_genuine(pools, spec.classes or classes_all, spec.n_sources, spec.name)]
            copies = sources[np.arange(spec.n_images) % spec.n_sources]
            jittered = np.clip(copies + rng.normal(0.0, spec.jitter, size=copies.shape), -1.0, 1.0).astype(np.float32)
            part = (jittered, np.full(spec.n_images, -1), np.ones(spec.n_images, bool))
        elif spec.kind == "copy":
            part = tuple(a.copy() for a in made[spec.of])
        elif spec.kind == "subset":
            source = made[spec.of]
            n = spec.n_images if spec.n_images is not None else max(1, len(source[0]) // 2)
            if n > len(source[0]):
                raise ValueError(f"contributor {spec.name!r}: subset of {n} images of {spec.of!r}, which owns {len(source[0])}")
            part = tuple(a[:n].copy() for a in source)
        else:
            raise ValueError(f"contributor kind={spec.kind!r} is unknown; valid: genuine, noise, duplicates, copy, subset")
        made[spec.name] = part
        out.append((Contributor(spec.name, spec.name, len(part[0])), *part))
    return out


def _planted_images(spec: PlantedContributor | ContributorSpec, genuine: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Images (n_images, 1, 8, 8) in [-1, 1] for one planted contributor."""
    if spec.kind == "noise":
        return rng.uniform(-1.0, 1.0, size=(spec.n_images, *genuine.shape[1:])).astype(np.float32)
    if spec.kind == "duplicates":
        sources = genuine[rng.choice(len(genuine), size=spec.n_sources, replace=False)]
        copies = sources[np.arange(spec.n_images) % spec.n_sources]
        jitter = rng.normal(0.0, spec.jitter, size=copies.shape)
        return np.clip(copies + jitter, -1.0, 1.0).astype(np.float32)
    raise ValueError(f"planted kind={spec.kind!r} is unknown; valid: ['noise', 'duplicates']")


def _load_digits(config: DigitsSource) -> ContributorDataset:
    """scikit-learn digits; see ``DigitsSource``. Contributor ids: ``class-d`` / ``random-k`` / a scenario's
    names / ``planted-<name>``."""
    from sklearn.datasets import load_digits

    # 1. Real images, scaled from [0, 16] to [-1, 1], optionally restricted to some classes.
    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0 * 2.0 - 1.0)[:, None]  # (N, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    if config.classes is not None:
        keep = np.isin(labels, config.classes)
        images, labels = images[keep], labels[keep]

    # 2. Held-out split (own random stream): reference + extractor images no contributor will own.
    held: dict[str, torch.Tensor] = {}
    if config.holdout_fraction > 0.0:
        train_idx, extractor_idx, reference_idx = holdout_split(labels, config.holdout_fraction, config.split_seed)
        held = {"reference_images": torch.from_numpy(images[reference_idx]),
                "extractor_images": torch.from_numpy(images[extractor_idx]),
                "extractor_labels": torch.from_numpy(labels[extractor_idx])}
        images, labels = images[train_idx], labels[train_idx]

    # 3. Contributors of the genuine images (a scenario's explicit list, or the scheme).
    rng = np.random.default_rng(config.split_seed)
    parts_planted = [np.zeros(len(images), bool)]
    if config.contributors is not None:
        made = scenario_contributors(config.contributors, images, labels, rng)
        contributors = [m[0] for m in made]
        parts_images, parts_labels = [m[1] for m in made], [m[2] for m in made]
        parts_owner = [np.full(len(m[1]), j) for j, m in enumerate(made)]
        parts_planted = [m[3] for m in made]
    elif config.scheme == "by_class":
        classes = sorted(set(labels.tolist()))
        contributors = [Contributor(f"class-{c}", f"digit {c}", int((labels == c).sum())) for c in classes]
        owner = np.searchsorted(np.asarray(classes), labels)
        parts_images, parts_owner, parts_labels = [images], [owner], [labels]
    else:
        k = int(re.fullmatch(r"random:(\d+)", config.scheme).group(1))
        if k > len(images):
            raise ValueError(f"data.scheme=random:{k} asks for more contributors than images ({len(images)})")
        owner = rng.permutation(np.arange(len(images)) % k)
        contributors = [Contributor(f"random-{j}", f"random part {j}", int((owner == j).sum())) for j in range(k)]
        parts_images, parts_owner, parts_labels = [images], [owner], [labels]

    # 4. Planted contributors, appended after the genuine ones.
    for spec in config.planted:
        extra = _planted_images(spec, images, rng)
        parts_images.append(extra)
        parts_owner.append(np.full(len(extra), len(contributors)))
        parts_labels.append(np.full(len(extra), -1))
        parts_planted.append(np.ones(len(extra), bool))
        contributors.append(Contributor(f"{PLANTED_PREFIX}{spec.name}", spec.name, len(extra)))
    ids = [c.id for c in contributors]
    if len(set(ids)) != len(ids):
        raise ValueError(f"contributor ids {ids} are not unique; give planted contributors distinct names")

    return ContributorDataset(
        images=torch.from_numpy(np.concatenate(parts_images)),
        contributor_index=torch.from_numpy(np.concatenate(parts_owner).astype(np.int64)),
        contributors=contributors,
        labels=torch.from_numpy(np.concatenate(parts_labels).astype(np.int64)),
        planted=torch.from_numpy(np.concatenate(parts_planted)),
        **held,
    )


# ----------------------------------------------------------------------------------------------------
# folder
# ----------------------------------------------------------------------------------------------------
def _read_image(path: Path, *, size: int, channels: int, csv_path: Path, line: int) -> np.ndarray:
    """One image as float32 (C, size, size) in [-1, 1]; a missing or unreadable file is a one-line error."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"image {path} (listed in {csv_path} line {line}) does not exist; fix the CSV or add the file")
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            image = image.resize((size, size), Image.Resampling.BICUBIC)
            array = np.asarray(image, dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ValueError(
            f"image {path} (listed in {csv_path} line {line}) is corrupt or not an image ({error}); replace or remove it"
        ) from None
    array = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return array / 127.5 - 1.0


def _class_labels(values: list[str], csv_path: Path) -> np.ndarray:
    """int64 class indices of the ``label`` column: the integers themselves, else the sorted names' positions."""
    empty = [k for k, v in enumerate(values) if not v.strip()]
    if empty:
        raise ValueError(f"{csv_path} line {empty[0] + 2} has an empty label; give every image a label")
    try:
        return np.asarray([int(v) for v in values], dtype=np.int64)
    except ValueError:
        names = sorted(set(values))
        return np.searchsorted(np.asarray(names), np.asarray(values)).astype(np.int64)


def _load_folder(config: FolderSource) -> ContributorDataset:
    """Images listed in ``contributors.csv`` (``file,contributor[,name][,label]``); contributors in sorted id order."""
    # 1. Read the mapping file.
    csv_path = Path(config.csv_path()).expanduser()
    root = Path(config.root).expanduser()
    if not csv_path.is_file():
        raise FileNotFoundError(f"data.contributors_csv: {csv_path} does not exist; write file,contributor rows there")
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing_columns = {"file", "contributor"} - set(reader.fieldnames or [])
        if missing_columns:
            raise ValueError(f"{csv_path} lacks columns {sorted(missing_columns)}; the header must be file,contributor[,name]")
        if config.labels and "label" not in (reader.fieldnames or []):
            raise ValueError(f"data.labels is true but {csv_path} has no `label` column (header: "
                             f"{','.join(reader.fieldnames or [])}); add file,contributor,label or set labels: false")
        rows = [(line, row) for line, row in enumerate(reader, start=2)]
    if not rows:
        raise ValueError(f"{csv_path} lists no images; add file,contributor rows")
    labels = _class_labels([row["label"] or "" for _, row in rows], csv_path) if config.labels else None
    held: dict[str, torch.Tensor] = {}
    if config.holdout_fraction > 0.0:
        assert labels is not None  # the schema requires labels for a held-out split
        train_idx, extractor_idx, reference_idx = holdout_split(labels, config.holdout_fraction, config.split_seed)
        if not len(reference_idx) or not len(extractor_idx):
            raise ValueError(f"data.holdout_fraction={config.holdout_fraction} holds out no reference or no extractor "
                             f"image of {csv_path} ({len(rows)} images); raise it or add images")

        def read(indices: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.stack([
                _read_image(root / rows[k][1]["file"], size=config.image_size, channels=config.channels,
                            csv_path=csv_path, line=rows[k][0]) for k in indices]).astype(np.float32))

        held = {"reference_images": read(reference_idx), "extractor_images": read(extractor_idx),
                "extractor_labels": torch.from_numpy(labels[extractor_idx])}
        everyone = {row["contributor"] for _, row in rows}
        rows, labels = [rows[k] for k in train_idx], labels[train_idx]
        emptied = sorted(everyone - {row["contributor"] for _, row in rows})
        if emptied:
            raise ValueError(f"data.holdout_fraction={config.holdout_fraction} holds out every image of contributors "
                             f"{emptied[:5]}; lower it or give them more images")

    # 2. Contributors in sorted id order (stable on every worker), names from the optional column.
    names: dict[str, str] = {}
    for _, row in rows:
        names.setdefault(row["contributor"], row.get("name") or row["contributor"])
    ids = sorted(names)
    position = {cid: j for j, cid in enumerate(ids)}

    # 3. Images.
    images = [
        _read_image(root / row["file"], size=config.image_size, channels=config.channels, csv_path=csv_path, line=line)
        for line, row in rows
    ]
    owner = np.asarray([position[row["contributor"]] for _, row in rows], dtype=np.int64)
    contributors = [Contributor(cid, names[cid], int((owner == j).sum())) for j, cid in enumerate(ids)]

    # 4. Optional held-out reference images (no contributor owns them); a file also listed for training is an error.
    reference = None
    if config.reference_csv is not None:
        reference_path = Path(config.reference_csv).expanduser()
        with reference_path.open(newline="") as handle:
            reference_rows = list(enumerate(csv.DictReader(handle), start=2))
        overlap = sorted({row.get("file") for _, row in reference_rows} & {row["file"] for _, row in rows})
        if overlap or not reference_rows or "file" not in reference_rows[0][1]:
            raise ValueError(f"{reference_path} must list (column `file`) at least one image that no contributor owns; "
                             f"{len(overlap)} are also training images (e.g. {overlap[:3]})")
        reference = torch.from_numpy(np.stack([
            _read_image(root / row["file"], size=config.image_size, channels=config.channels, csv_path=reference_path,
                        line=line) for line, row in reference_rows]).astype(np.float32))
    if reference is not None:
        held["reference_images"] = reference
    return ContributorDataset(
        images=torch.from_numpy(np.stack(images).astype(np.float32)),
        contributor_index=torch.from_numpy(owner),
        contributors=contributors,
        labels=None if labels is None else torch.from_numpy(labels),
        **held,
    )


# ----------------------------------------------------------------------------------------------------
# image files (shared by the folder-like use-case sources)
# ----------------------------------------------------------------------------------------------------
def read_images(files: list[Path], size: int, *, desc: str = "read images") -> torch.Tensor:
    """RGB images resized to ``size`` as float32 (N, 3, size, size) in [-1, 1]; a bad file names itself."""
    from PIL import Image, UnidentifiedImageError
    from tqdm.auto import tqdm

    out = np.empty((len(files), 3, size, size), dtype=np.float32)
    for i, path in enumerate(tqdm(files, desc=desc, leave=False, disable=len(files) < 500)):
        if not path.is_file():
            raise FileNotFoundError(f"image {path} is listed but does not exist; fix the labels file or add the image")
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise ValueError(f"image {path} is corrupt or not an image ({error}); replace or remove it") from None
        out[i] = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    return torch.from_numpy(out)
