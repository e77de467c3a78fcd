"""Model-based baselines (torch): similarity and TRAK-style gradient attribution per contributor.

These are the attribution baselines of Lin et al. (2025, Sec. 5) that look at the model and its data
instead of re-training on coalitions. Each returns one score per contributor (shape (n,)), *unsigned*:
"how much the generated images resemble / depend on this contributor's images". ``contribshap.pipeline.products.evaluate``
orients them per property on the estimate rows, then scores them with the same LDS and counterfactuals
as the Shapley estimates.

Generated images: ``sampling.n_images`` samples of the full model θ* from the shared noise seed (common
random numbers), exactly what the game's property sees for the full model's weights. Every model kind
works: similarities use the decoded images, TRAK the model's own space (pixels or latents).

- ``pixel_mean`` / ``pixel_max``: cosine similarity of flattened pixels (centred on the training mean)
  between each generated image and each training image; a contributor's score is, averaged over
  generated images, the mean (or the max) over its own images.
- ``feature_mean`` / ``feature_max``: the same on the property extractor's features (the digits CNN for
  the demo, Inception for real runs), centred on the training-feature mean.
- ``trak``: TRAK (Park et al. 2023) as adapted to diffusion (D-TRAK, Zheng et al. 2024):
  per-sample gradients g(x) of the diffusion loss at fixed timesteps and noise, randomly projected,
  ``phi = P^T g`` with P Gaussian (d columns); score(train i, generated j) =
  ``phi_j^T (Phi^T Phi + lambda I)^{-1} phi_i``; a contributor's score is the sum over its samples of the
  mean over generated images.

Notation map: ``train`` (N, C, H, W) = all training images; ``owner`` (N,) = contributor index;
``generated`` (M, C, H, W); ``Phi`` (N, d), ``Psi`` (M, d) projected gradients.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from contribshap.pipeline.contracts.progress import report_progress

if TYPE_CHECKING:
    from contribshap.pipeline.config.schema import Config
    from contribshap.workers.prepare import Prepared

MODEL_BASELINES = ("pixel_mean", "pixel_max", "feature_mean", "feature_max", "trak")


def _check(methods: list[str] | tuple[str, ...]) -> None:
    bad = [m for m in methods if m not in MODEL_BASELINES]
    if bad:
        raise ValueError(f"unknown model baseline(s) {bad}; valid: {list(MODEL_BASELINES)}")


def similarity_scores(
    train: np.ndarray, owner: np.ndarray, generated: np.ndarray, n_contributors: int, *, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and max cosine similarity per contributor, averaged over generated items.

    Args:
        train: float (N, D) training vectors (pixels or features). owner: int (N,) in [0, n_contributors).
        generated: float (M, D). n_contributors: n. chunk: generated rows per block (memory).

    Returns:
        ``(mean_score, max_score)``, each float (n,); a contributor without items gets NaN.

    Example:
        >>> t = np.array([[1.0, 0.0], [0.0, 1.0]]); g = np.array([[1.0, 0.1]])
        >>> [s.round(3).tolist() for s in similarity_scores(t, np.array([0, 1]), g, 2)]
        [[0.995, 0.1], [0.995, 0.1]]
    """
    train = np.asarray(train, dtype=np.float64)
    generated = np.asarray(generated, dtype=np.float64)
    owner = np.asarray(owner, dtype=np.int64)
    tn = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-12)
    gn = generated / np.maximum(np.linalg.norm(generated, axis=1, keepdims=True), 1e-12)
    counts = np.bincount(owner, minlength=n_contributors).astype(float)
    mean_acc = np.zeros(n_contributors)
    max_acc = np.zeros(n_contributors)
    for begin in range(0, len(gn), chunk):
        sim = gn[begin : begin + chunk] @ tn.T  # (b, N)
        per_sum = np.zeros((len(sim), n_contributors))
        np.add.at(per_sum.T, owner, sim.T)
        mean_acc += (per_sum / np.maximum(counts, 1)).sum(axis=0)
        per_max = np.full((len(sim), n_contributors), -np.inf)
        for c in range(n_contributors):
            members = owner == c
            if members.any():
                per_max[:, c] = sim[:, members].max(axis=1)
        max_acc += per_max.sum(axis=0)
    m = len(gn)
    mean_score = np.where(counts > 0, mean_acc / m, np.nan)
    max_score = np.where(counts > 0, max_acc / m, np.nan)
    return mean_score, max_score


def _loss_batch(model: torch.nn.Module, scheduler: Any, x: torch.Tensor, timesteps: torch.Tensor,
                noise: torch.Tensor) -> torch.Tensor:
    """Diffusion loss of one image averaged over T fixed (t, eps): x (C, H, W) -> scalar."""
    xs = x.unsqueeze(0).expand(len(timesteps), *x.shape)
    noisy = scheduler.add_noise(xs, noise, timesteps)
    return torch.nn.functional.mse_loss(model(noisy, timesteps).sample, noise)


def projected_gradients(
    model: torch.nn.Module,
    scheduler: Any,
    images: torch.Tensor,
    *,
    dim: int = 256,
    n_timesteps: int = 8,
    seed: int = 0,
    max_params: int = 4_000_000,
    progress: str | None = None,
) -> np.ndarray:
    """Random projections of per-sample gradients of the diffusion loss.

    Args:
        model: the denoiser (eval mode; its parameters are not changed).
        scheduler: the training ``DDPMScheduler`` (``add_noise``, ``num_train_timesteps``).
        images: float (N, C, H, W) in [-1, 1].
        dim: projection dimension d (default 256).
        n_timesteps: fixed timesteps (evenly spaced over the schedule) and noises shared by every sample.
        seed: seed of the noises and of the Gaussian projection.
        max_params: use the gradients of the last parameters of the model up to this count (a dense
            projection of a 35M-parameter model would not fit; the demo's 164k-parameter UNet uses all).
        progress: stage name of the progress display, or None for none: inside a task that collects
            progress the steps go to the driver's bar (``report_progress``), otherwise a tqdm bar is shown.

    Returns:
        float64 (N, d).
    """
    from tqdm.auto import tqdm

    # 1. Which parameters, the fixed (t, eps) and the projection.
    params = [p for p in model.parameters() if p.requires_grad]
    chosen, total = [], 0
    for p in reversed(params):
        if total + p.numel() > max_params and chosen:
            break
        chosen.append(p)
        total += p.numel()
    chosen.reverse()
    generator = torch.Generator().manual_seed(int(seed))
    n_train = scheduler.config.num_train_timesteps
    timesteps = torch.linspace(0, n_train - 1, n_timesteps).round().long()
    noise = torch.randn((n_timesteps, *images.shape[1:]), generator=generator)
    projection = torch.randn((total, dim), generator=generator) / math.sqrt(dim)
    device = next(model.parameters()).device
    timesteps, noise, projection = timesteps.to(device), noise.to(device), projection.to(device)
    # 2. One backward per sample (small models on CPU; vmap over diffusers blocks is not guaranteed).
    out = np.empty((len(images), dim))
    was_training = model.training
    model.eval()
    to_driver = progress is not None and report_progress(progress, 0, len(images))
    for i in tqdm(range(len(images)), desc=progress, disable=progress is None or to_driver, mininterval=1.0):
        grads = torch.autograd.grad(_loss_batch(model, scheduler, images[i].to(device), timesteps, noise), chosen)
        flat = torch.cat([g.reshape(-1) for g in grads])
        out[i] = (flat @ projection).double().cpu().numpy()
        if to_driver:
            report_progress(progress, i + 1, len(images))
    model.train(was_training)
    return out


def trak_scores(phi_train: np.ndarray, owner: np.ndarray, psi_generated: np.ndarray, n_contributors: int,
                *, damping: float = 1e-3) -> np.ndarray:
    """Contributor TRAK scores: sum over its samples of the mean over generated images.

    Args:
        phi_train: float (N, d). owner: int (N,). psi_generated: float (M, d). n_contributors: n.
        damping: lambda relative to the mean eigenvalue of Phi^T Phi (default 1e-3).

    Returns:
        float (n,).
    """
    gram = phi_train.T @ phi_train
    lam = damping * np.trace(gram) / len(gram)
    kernel_inv_psi = np.linalg.solve(gram + lam * np.eye(len(gram)), psi_generated.mean(axis=0))  # (d,)
    per_sample = phi_train @ kernel_inv_psi  # (N,) = mean_j psi_j^T K^-1 phi_i
    return np.bincount(np.asarray(owner, dtype=np.int64), weights=per_sample, minlength=n_contributors)


def model_baselines(
    cfg: Config,
    root: Path,
    *,
    methods: list[str] | tuple[str, ...] = MODEL_BASELINES,
    progress: bool = True,
    trak_dim: int = 256,
    trak_timesteps: int = 8,
) -> dict[str, np.ndarray]:
    """Compute the model baselines of a diffusion store (prepare artifacts must exist or are built).

    Args:
        cfg: the run's ``contribshap.pipeline.config.schema.Config`` (``game.kind: diffusion``).
        root: the store folder (artifacts under ``<store>/artifacts``).
        methods: subset of :data:`MODEL_BASELINES`.
        progress: show the TRAK gradients' steps and the timings (to the driver's bar inside a task that
            collects progress, else a tqdm bar and a printed line).
        trak_dim / trak_timesteps: TRAK projection dimension and number of fixed timesteps.

    Returns:
        method -> float array (n,) (unsigned scores, contributor order of the manifest). Also cached in
        ``<store>/estimates/model_baselines.json`` with the seconds each took.
    """
    import json

    from contribshap.workers.data import load_dataset
    from contribshap.workers.measure import generate_samples
    from contribshap.workers.prepare import load_prepared

    _check(methods)
    # 1. Prepared artifacts and the full model's generated samples (shared noise, replicate 0), in the
    #    model's space (pixels, or latents for a latent backend) and decoded to images.
    game = cfg.game
    prepared = load_prepared(game, Path(root) / "artifacts", seed=cfg.seed)
    backend = prepared.backend
    images = load_dataset(game.data).images
    n = len(prepared.contributors)
    owner = prepared.owner
    report_progress("model baselines: samples of the full model")
    samples, generated, _ = generate_samples(game, backend, backend.stage_model("theta_star"), replicate=0,
                                             device=prepared.device)
    out: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    # 2. Pixel similarity.
    if {"pixel_mean", "pixel_max"} & set(methods):
        report_progress("model baselines: pixel similarity")
        start = time.perf_counter()
        train_pixels = images.reshape(len(images), -1).double().numpy()
        centre = train_pixels.mean(axis=0)  # without centring, the shared background dominates the cosine
        mean, best = similarity_scores(train_pixels - centre, owner,
                                       generated.reshape(len(generated), -1).double().numpy() - centre, n)
        out["pixel_mean"], out["pixel_max"] = mean, best
        seconds["pixel"] = time.perf_counter() - start
    # 3. Feature similarity (the property extractor's features, centred on the training mean).
    if {"feature_mean", "feature_max"} & set(methods):
        report_progress("model baselines: feature similarity")
        start = time.perf_counter()
        train_features = np.concatenate([prepared.extractor(images[i : i + 512]).features
                                         for i in range(0, len(images), 512)])
        gen_features = prepared.extractor(generated).features
        centre = train_features.mean(axis=0)
        mean, best = similarity_scores(train_features - centre, owner, gen_features - centre, n)
        out["feature_mean"], out["feature_max"] = mean, best
        seconds["feature"] = time.perf_counter() - start
    # 4. TRAK on the full model θ*, in the model's space (training items and generated samples).
    if "trak" in methods:
        start = time.perf_counter()
        model = backend.theta_star_start()
        phi = projected_gradients(model, backend.noise_scheduler, prepared.data, dim=trak_dim,
                                  n_timesteps=trak_timesteps, seed=cfg.seed,
                                  progress="TRAK train gradients" if progress else None)
        psi = projected_gradients(model, backend.noise_scheduler, samples, dim=trak_dim,
                                  n_timesteps=trak_timesteps, seed=cfg.seed,
                                  progress="TRAK generated gradients" if progress else None)
        out["trak"] = trak_scores(phi, owner, psi, n)
        seconds["trak"] = time.perf_counter() - start
    out = {k: v for k, v in out.items() if k in methods}
    folder = Path(root) / "estimates"
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"scores": {k: v.tolist() for k, v in out.items()}, "seconds": seconds,
               "contributors": [c.id for c in prepared.contributors], "n_generated": len(generated)}
    (folder / "model_baselines.json").write_text(json.dumps(payload, indent=2))
    timings = "model baselines: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
    if progress and not report_progress(timings):  # a task's driver shows it on its bar, else print it
        print(timings, flush=True)
    return out


def coalition_images(cfg: Config, prepared: Prepared, mask: np.ndarray, *, ids: list[str], n_images: int) -> torch.Tensor:
    """The first ``n_images`` generated images of coalition ``mask``, made as the game makes them.

    Args:
        cfg: the run's config (diffusion, any model kind). prepared: ``load_prepared(cfg.game, <store>/artifacts,
            seed=cfg.seed)`` (importable from ``contribshap.workers.game``). mask: bool (n,). ids: contributor ids
            in mask order. n_images: how many images.

    Same start model by ``finetune.mode``, same job seed (``derive_seed(seed, key, replicate 0)``), same
    training call and the same shared noise as :class:`contribshap.workers.game.DiffusionGame`, so the images
    are those whose properties the store holds for this coalition (replicate 0); the empty coalition gives
    the null model's images.

    Returns:
        float32 (n_images, C, H, W) in [-1, 1] on CPU.
    """
    from contribshap.pipeline.contracts.keys import derive_seed, key_of_mask
    from contribshap.workers.game import finetune_on
    from contribshap.workers.measure import generate

    game = cfg.game
    mask = np.asarray(mask, dtype=bool)
    backend = prepared.backend
    if mask.any():
        seed = derive_seed(cfg.seed, key_of_mask(mask, ids), 0)
        trained, _, _, _ = finetune_on(game, prepared, mask, seed=seed)
        model = backend.sampling_model(trained)
    else:
        model = backend.stage_model("null")
    images, _ = generate(game, backend, model, replicate=0, device=prepared.device, n_images=n_images)
    return images


def counterfactual_samples(
    cfg: Config, root: Path, panels: list[tuple[str, np.ndarray]], out_png: Path, *, n_show: int = 36,
) -> Path:
    """Save a PNG with one grid of generated samples per panel (e.g. full model / without the top-k).

    Args:
        cfg: the run's config (diffusion). root: the store. panels: ``(title, mask)`` pairs, mask bool (n,).
        out_png: output file. n_show: images per panel (a square grid; default 36).

    Returns:
        ``out_png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from contribshap.workers.prepare import load_prepared

    prepared = load_prepared(cfg.game, Path(root) / "artifacts", seed=cfg.seed)
    ids = [c.id for c in prepared.contributors]
    side = math.ceil(math.sqrt(n_show))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 4.4))
    axes = np.atleast_1d(axes)
    for ax, (title, mask) in zip(axes, panels, strict=True):
        images = coalition_images(cfg, prepared, mask, ids=ids, n_images=n_show).clamp(-1, 1)
        c, h, w = images.shape[1:]
        grid = np.ones((side * (h + 1), side * (w + 1), c))
        for k, image in enumerate(images):
            r, q = divmod(k, side)
            grid[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = (
                (image.permute(1, 2, 0).cpu().numpy() + 1) / 2
            )
        ax.imshow(grid[..., 0] if c == 1 else grid, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)
