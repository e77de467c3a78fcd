"""The regression family: ``kernelshap`` (default), ``leverage_shap``, ``kernelshap_paper`` (numpy only).

All three solve  min_φ Σ_S w_S (y_S - z_S·φ)²  s.t.  Σ_i φ_i = t  in closed form (the constraint is
eliminated with an orthonormal basis Q of 1⊥: φ = t/n·1 + Qβ) and differ only in the row weights w_S;
see the package docstring for the weights, the size centring of ``kernelshap`` and the intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from contribshap.pipeline.core.designs import kernel_weights, layer_kernel_mass
from contribshap.pipeline.core.estimators._base import (
    Data,
    MethodResult,
    distrust_zero_variance,
    register_method,
    unknown_ci,
)

CENTER_KINDS: tuple[str, ...] = ("auto", "size", "none")
"""Valid values of the ``center`` option of ``kernelshap`` (default ``"auto"``)."""

REGRESSION_METHODS: tuple[str, ...] = ("kernelshap", "leverage_shap", "kernelshap_paper")


def _basis(n: int) -> np.ndarray:
    """Orthonormal basis Q (n, n-1) of the subspace orthogonal to the all-ones vector."""
    # Helmert-type construction via QR of [1 | I] (deterministic)
    q, _ = np.linalg.qr(np.column_stack([np.ones(n), np.eye(n)[:, : n - 1]]))
    return q[:, 1:n]


def _strata(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strata (size pairs) and sampling units (complementary pairs or single coalitions).

    Returns:
        stratum (u,) int: min(|S|, n-|S|); unit (u,) int: unit id shared by S and N∖S when both observed;
        fpc_fraction (n//2 + 1,) float: observed share of each stratum's coalitions.
    """
    u, n = z.shape
    sizes = z.sum(axis=1)
    stratum = np.minimum(sizes, n - sizes)
    keys = {row.tobytes(): i for i, row in enumerate(np.packbits(z, axis=1))}
    unit = np.arange(u)
    comp = np.packbits(~z, axis=1)
    for i in range(u):
        j = keys.get(comp[i].tobytes())
        if j is not None and j < i:
            unit[i] = unit[j]
    observed = np.bincount(stratum, minlength=n // 2 + 1).astype(np.float64)
    population = np.array(
        [math.comb(n, k) * (1 if 2 * k == n else 2) if k > 0 else 1 for k in range(n // 2 + 1)], dtype=np.float64
    )
    return stratum, unit, np.minimum(observed / population, 1.0)


def _collapse_thin(z: np.ndarray, stratum: np.ndarray, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collapsed strata: sampled size strata holding fewer than two sampling units are merged with their
    sampled neighbours (in order of size, smallest first) until every group holds at least two units.

    A stratum with one unit has no within-stratum spread, so the stratified variance cannot see its error;
    with n in the hundreds a plan of a few n coalitions spreads its units over ~n/2 strata, most of them
    thin. Pooling adjacent strata (the collapsed-strata estimator of survey sampling) treats their units as
    one stratum: the variance then also holds the spread of the strata's means, which makes it conservative
    by that spread and nothing else (adjacent sizes have similar influence rows). Fully enumerated strata
    (every coalition observed) are left alone. Returns (stratum (u,) the group id, the smallest size pair
    in the group; fraction (n//2 + 1,) observed share per group id, pooled over the group).
    """
    n = z.shape[1]
    observed = np.bincount(stratum, minlength=n // 2 + 1).astype(np.float64)
    population = np.array(
        [math.comb(n, k) * (1 if 2 * k == n else 2) if k > 0 else 1 for k in range(n // 2 + 1)], dtype=np.float64
    )
    units_in = np.zeros(len(observed), dtype=np.int64)
    pairs = np.unique(np.column_stack([stratum, unit]), axis=0)
    np.add.at(units_in, pairs[:, 0], 1)
    fraction = np.minimum(observed / population, 1.0)
    sampled = [h for h in range(len(observed)) if units_in[h] > 0 and fraction[h] < 1.0]
    groups: list[list[int]] = []
    held = 0
    for h in sampled:
        if groups and held < 2:
            groups[-1].append(h)
        else:
            groups.append([h])
            held = 0
        held += int(units_in[h])
    if len(groups) > 1 and held < 2:  # the last group is thin: pool it with the one before
        groups[-2].extend(groups.pop())
    out = stratum.copy()
    pooled = fraction.copy()
    for members in groups:
        if len(members) == 1:
            continue
        head = members[0]
        out[np.isin(stratum, members)] = head
        pooled[head] = min(observed[members].sum() / population[members].sum(), 1.0)
        pooled[members[1:]] = 0.0
    return out, pooled


def _regression_weights(data: Data, method: str) -> np.ndarray:
    n = data.n
    sizes = data.z.sum(axis=1)
    if method == "kernelshap":
        counts = np.bincount(sizes, minlength=n + 1).astype(np.float64)
        return layer_kernel_mass(n)[sizes] / counts[sizes]
    if method == "leverage_shap":
        pi = _leverage_inclusion(n, sizes)
        return kernel_weights(n, sizes) / pi
    if method == "kernelshap_paper":
        return data.draw_counts.astype(np.float64)
    raise ValueError(f"no regression weights for method {method!r}; valid: {', '.join(REGRESSION_METHODS)}.")


def _leverage_inclusion(n: int, sizes: np.ndarray) -> np.ndarray:
    """π_k = 1 - exp(-τ / C(n,k)) with τ such that Σ_S π_S = number of observed coalitions."""
    k = np.arange(1, n)
    binom = np.array([float(math.comb(n, int(kk))) for kk in k])
    target = float(len(sizes))

    def expected(log_tau: float) -> float:
        return float(np.sum(binom * -np.expm1(-np.exp(log_tau) / binom)))

    lo, hi = -50.0, math.log(binom.max()) + 60.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if expected(mid) < target:
            lo = mid
        else:
            hi = mid
    tau = math.exp((lo + hi) / 2)
    pi = -np.expm1(-tau / binom)
    return np.maximum(pi[sizes - 1], 1e-300)


def _solve_constrained(x: np.ndarray, yprime: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """β = (XᵀWX)⁺ XᵀW y'. Returns (β, (XᵀWX)⁺)."""
    a = (x * w[:, None]).T @ x
    h = np.linalg.pinv(a, hermitian=True)
    return h @ (x.T @ (w * yprime)), h


def _center_by_size(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Subtract from every row of x (u, d) and y (u,) the w-weighted mean of its size layer."""
    sw = np.bincount(sizes, weights=w)
    safe = np.where(sw > 0, sw, 1.0)
    x_mean = np.stack([np.bincount(sizes, weights=w * x[:, j], minlength=len(sw)) for j in range(x.shape[1])], axis=1)
    y_mean = np.bincount(sizes, weights=w * y, minlength=len(sw))
    return x - (x_mean / safe[:, None])[sizes], y - (y_mean / safe)[sizes]


def _intercept_groups(sizes: np.ndarray, unit: np.ndarray, n: int) -> np.ndarray:
    """(u,) int: the intercept group of each row for the size-centred fit.

    One group per coalition size, except that a size holding rows of fewer than two sampling units is
    merged into its neighbour toward n/2 (outermost sizes first, repeatedly): a lone unit under its own
    intercept is fitted exactly (leverage 1), which leaves nothing to estimate its players' variance from
    and would force those players back to the plain fit.
    """
    group = sizes.astype(np.int64).copy()
    for k in sorted(set(group.tolist()), key=lambda s: -abs(2 * s - n)):
        rows = group == k
        if not rows.any() or len(np.unique(unit[rows])) >= 2:
            continue
        present = sorted(set(group[~rows].tolist()), key=lambda s: (abs(s - k), abs(2 * s - n)))
        inward = [s for s in present if abs(2 * s - n) < abs(2 * k - n)] or present
        if inward:
            group[rows] = min(inward, key=lambda s: abs(s - k))
    return group


def _coarse_groups(sizes: np.ndarray, groups: np.ndarray, max_groups: int) -> np.ndarray | None:
    """(u,) int: intercept groups of adjacent sizes, at most ``max_groups`` of them with about equal row
    counts (contiguous in size; the id of a group is its smallest size), or None if ``groups`` has no more."""
    if len(np.unique(groups)) <= max_groups:
        return None
    order = np.argsort(sizes, kind="stable")
    bins = np.empty(len(sizes), dtype=np.int64)
    bins[order] = np.arange(len(sizes)) * max_groups // len(sizes)
    # rows of one size share a bin (the bin of its first row in size order)
    first: dict[int, Any] = {}
    for r in order:
        first.setdefault(int(sizes[r]), bins[r])
    bins = np.array([first[int(k)] for k in sizes], dtype=np.int64)
    head = {b: int(sizes[bins == b].min()) for b in np.unique(bins)}
    return np.array([head[b] for b in bins], dtype=np.int64)


@dataclass
class _Fit:
    """One weighted constrained solve: φ = t/n + ``offset``, ``offset = lin @ y'``, ``g`` its influence rows."""

    offset: np.ndarray  # (n,), orthogonal to 1 for a single fit
    lin: np.ndarray  # (n, u): φ - t/n is linear in y' through this operator
    g: np.ndarray  # (u, n): influence of each row on φ (HC2-adjusted residual times its column of lin)
    rank: int
    identified: np.ndarray | None = None  # (n,) bool: value and variance identified (see _identified)
    params: float | np.ndarray = 0.0  # parameters fitted: rank, plus the per-size intercepts when centred
    g_raw: np.ndarray | None = None  # (u, n): influence rows from the raw residuals (chooses the blend weight)
    imputed: np.ndarray | float = 0.0  # (n,): variance of the units fitted exactly, from pooled residuals


def _fit(x_fit: np.ndarray, y_fit: np.ndarray, w: np.ndarray, q: np.ndarray, unit: np.ndarray,
         stratum: np.ndarray, fraction: np.ndarray, intercept_groups: np.ndarray | None = None) -> _Fit:
    """One weighted solve. ``intercept_groups`` (u,): the per-size intercept group of each row that a
    size-centred fit profiled out (None: the plain fit).

    The small-sample correction is CR2 per sampling unit (Bell-McCaffrey): a unit's weighted residuals are
    multiplied by (I - H_uu)^(-1/2), H_uu the block of the symmetric hat matrix on the unit's rows
    (eigenvalues of I - H_uu floored at 0.0025: at most 20-fold), which makes the squared residuals unbiased
    for the error variance under homoscedasticity; the t quantile of _t_inflation covers the noise of the
    variance estimate. For the plain fit a complementary pair spans one direction (x_{N∖S} = -x_S), so the
    block has one non-zero eigenvalue, h_S + h_{N∖S}, and this is the per-unit HC2 division by
    sqrt(1 - h_unit). For the size-centred fit the model is [per-size intercepts | centred design], whose
    hat matrix is the intercepts' (w-weighted layer means) plus the centred design's (Frisch-Waugh); the two
    rows of a pair usually sit under different intercepts, so their block has two eigenvalues that may sum
    past 1 without either reaching it (a summed leverage would call such a unit fitted exactly). A unit is
    fitted exactly (no residual to see its error by) when the largest eigenvalue of H_uu reaches 1.
    """
    beta, h = _solve_constrained(x_fit, y_fit, w)
    # x_fitᵀW y_fit = x_fitᵀW y' when x_fit is size-centred, so lin applies to the uncentred y' as well
    lin = q @ h @ (x_fit * w[:, None]).T
    resid = y_fit - x_fit @ beta
    hat = w * ((x_fit @ h) * x_fit).sum(axis=1)  # = einsum("ij,jk,ik->i"), 30x faster at n = 1,000
    group_w = None
    if intercept_groups is not None:
        group_w = np.bincount(intercept_groups, weights=w)
        hat = hat + w / group_w[intercept_groups]
    sw = np.sqrt(w)
    scaled = sw * resid
    adjusted = np.empty_like(scaled)
    unit_max = np.empty_like(hat)  # largest eigenvalue of the unit's hat block, per row
    # units of one row (an unpaired coalition) and of two (a complementary pair)
    first = np.full(int(unit.max()) + 1, -1)
    second = np.full(int(unit.max()) + 1, -1)
    for r, un in enumerate(unit):
        if first[un] < 0:
            first[un] = r
        else:
            second[un] = r
    single = first[(first >= 0) & (second < 0)]
    adjusted[single] = scaled[single] / np.sqrt(np.maximum(1.0 - hat[single], 0.0025))
    unit_max[single] = hat[single]
    a, b = first[second >= 0], second[second >= 0]
    if len(a):
        cross = sw[a] * sw[b] * ((x_fit[a] @ h) * x_fit[b]).sum(axis=1)
        if intercept_groups is not None:
            assert group_w is not None
            same = intercept_groups[a] == intercept_groups[b]
            cross = cross + np.where(same, sw[a] * sw[b] / group_w[intercept_groups[a]], 0.0)
        block = np.empty((len(a), 2, 2))
        block[:, 0, 0], block[:, 1, 1] = 1.0 - hat[a], 1.0 - hat[b]
        block[:, 0, 1] = block[:, 1, 0] = -cross
        ev, vec = np.linalg.eigh(block)
        inv_sqrt = np.einsum("pij,pj,pkj->pik", vec, 1.0 / np.sqrt(np.maximum(ev, 0.0025)), vec)
        pair = np.einsum("pij,pj->pi", inv_sqrt, np.column_stack([scaled[a], scaled[b]]))
        adjusted[a], adjusted[b] = pair[:, 0], pair[:, 1]
        unit_max[a] = unit_max[b] = 1.0 - ev[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        adjusted = np.where(sw > 0, adjusted / sw, 0.0)
    # 4. units fitted exactly: their residual shows nothing, so their error variance is imputed from the
    #    others (the pooled squared adjusted residual of their collapsed stratum, or of all sampled rows);
    #    only without any residual to pool is a player that depends on them left unidentified
    sampled = fraction[stratum] < 1.0
    exact_rows = sampled & (unit_max > 1.0 - 1e-8)
    imputed = np.zeros(lin.shape[0])
    if exact_rows.any():
        seen = sampled & ~exact_rows
        if seen.any():
            total_sq = np.bincount(stratum[seen], weights=adjusted[seen] ** 2, minlength=len(fraction))
            count = np.bincount(stratum[seen], minlength=len(fraction))
            pooled = float(np.mean(adjusted[seen] ** 2))
            with np.errstate(divide="ignore", invalid="ignore"):
                per_stratum = np.where(count > 0, total_sq / np.maximum(count, 1), pooled)
            imputed = (lin[:, exact_rows] ** 2) @ per_stratum[stratum[exact_rows]]
            adjusted = np.where(exact_rows, 0.0, adjusted)
            unit_max = np.where(exact_rows, 0.0, unit_max)
    rank = int(np.linalg.matrix_rank(x_fit * sw[:, None]))
    identified = _identified(x_fit, w, q, lin, unit_max, rank, stratum, fraction, unit)
    n_intercepts = 0 if group_w is None else int(np.count_nonzero(group_w))
    return _Fit(offset=q @ beta, lin=lin, g=(lin * adjusted).T, rank=rank, identified=identified,
                params=float(rank + n_intercepts), g_raw=(lin * resid).T, imputed=imputed)


def _units_per_stratum(stratum: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Number of distinct sampling units in each stratum (indexed by stratum)."""
    pairs = np.unique(np.column_stack([stratum, unit]), axis=0)
    return np.bincount(pairs[:, 0], minlength=int(stratum.max()) + 1)


def _identified(x_fit: np.ndarray, w: np.ndarray, q: np.ndarray, lin: np.ndarray, unit_hat: np.ndarray, rank: int,
                stratum: np.ndarray, fraction: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """(n,) bool: which players' values *and* sampling variances the rows identify.

    1. Value: φ_i = t/n + (Qβ)_i is identified iff e_i has no component along the null space of the
       weighted design (Q · null(√W X)); otherwise the pseudo-inverse picked one of many solutions (a
       paired design with fewer than n-1 pairs: S and N∖S span one direction only).
    2. Variance: the sandwich sees a row's error only through its residual and the spread of units within
       a stratum. A sampling unit with leverage 1 is fitted exactly whatever its value (zero residual), and a
       sampled stratum with a single unit has no spread: a player whose φ_i depends on such a unit
       (lin ≠ 0 on its rows) has no variance estimate. Enumerated strata (fraction 1) are exempt: they
       carry no sampling variance.
    """
    # 1. value
    # only V (d × d) is needed: the thin SVD gives all of it when u >= d (U of u × u would be wasted work)
    _, _, vt = np.linalg.svd(x_fit * np.sqrt(w)[:, None], full_matrices=x_fit.shape[0] < x_fit.shape[1])
    player_null = q @ vt[rank:].T  # (n, d - rank)
    value_ok = (player_null**2).sum(axis=1) <= 1e-10
    # 2. variance
    sampled = fraction[stratum] < 1.0
    blind = sampled & ((unit_hat > 1.0 - 1e-8) | (_units_per_stratum(stratum, unit)[stratum] < 2))  # (u,)
    scale = np.abs(lin).max(axis=1, keepdims=True)
    depends = np.abs(lin) > 1e-9 * np.where(scale > 0, scale, 1.0)  # (n, u)
    variance_ok = ~(depends & blind[None, :]).any(axis=1)
    return value_ok & variance_ok


def _blend_weights(plain: _Fit, centred: _Fit, stratum: np.ndarray, unit: np.ndarray,
                   fraction: np.ndarray) -> np.ndarray:
    """λ (n,) in [0, 1] minimising Var(φ_p + λ(φ_c - φ_p)) per player (φ_c - φ_p is a control variate).

    The choice uses the raw-residual influence rows: the leverage correction makes the *reported* variance
    unbiased, but it inflates the centred fit's thin layers by up to 20-fold, which would push λ to the
    plain fit exactly where centring removes the most variance (utilities that grow with |S|). The
    reported variance keeps the corrected rows and the bound of step 3 (λ chosen on the data).
    """
    plain_g = plain.g if plain.g_raw is None else plain.g_raw
    centred_g = centred.g if centred.g_raw is None else centred.g_raw
    diff = centred_g - plain_g
    var_diff = _stratified_cov(diff, diff, stratum, unit, fraction)
    cov = _stratified_cov(plain_g, diff, stratum, unit, fraction)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(var_diff > 0, -cov / var_diff, 1.0)
    return np.clip(np.nan_to_num(lam, nan=1.0), 0.0, 1.0)


def _blend(plain: np.ndarray, centred: np.ndarray, lam: np.ndarray, player_axis: int = 0) -> np.ndarray:
    """plain + λ (centred - plain) along the player axis, re-projected onto Σ_players = 0 (efficiency)."""
    shape = [1] * plain.ndim
    shape[player_axis] = -1
    out = plain + lam.reshape(shape) * (centred - plain)
    return out - out.mean(axis=player_axis, keepdims=True)


def _regression(
    data: Data, method: str, ci: str, n_boot: int, seed: int, deterministic: bool, center: str = "none"
) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray, int, np.ndarray, np.ndarray]:
    """Returns (value (n,), variance (n,), extras, identified (n,) bool, more evaluations needed, the error
    covariance's factor (n, K) and independent part (n,): Cov ≈ F Fᵀ + diag, before the t inflation)."""
    n, u = data.n, data.n_unique
    if u < n - 1:
        more = n - u
        raise ValueError(
            f"method {method!r} needs at least n-1={n - 1} distinct proper coalitions with finite values; "
            f"got {u}. Evaluate at least {more} more coalition{'s' if more > 1 else ''} (raise the budget)."
        )
    # 1. weights, basis, reduced problem  y' = y - t/n·|S| = (Z Q) β; strata and sampling units
    w = _regression_weights(data, method)
    q = _basis(n)
    zf = data.z.astype(np.float64)
    x = zf @ q
    sizes = zf.sum(axis=1)
    size_index = sizes.astype(np.int64)
    total = data.total
    yprime = data.y - data.v_empty - total / n * sizes
    if method != "kernelshap_paper":
        layer, unit, layer_fraction = _strata(data.z)
        # the variance pools thin strata (collapsed strata); the blend weight keeps the size pairs, whose
        # means differ by the very size effect the control variate removes
        stratum, fraction = _collapse_thin(data.z, layer, unit)
    else:
        stratum, unit, fraction = np.zeros(u, dtype=np.int64), np.arange(u), np.zeros(1)
        layer, layer_fraction = stratum, fraction
    if not deterministic and data.noise_var is None:
        # utility noise unknown: a fully enumerated layer still carries noise, so no FPC (conservative)
        fraction, layer_fraction = np.zeros_like(fraction), np.zeros_like(layer_fraction)

    # 2. the plain fit, the size-centred fit (a free intercept per size; needs n-1 dof left), the blend.
    #    The centred fit takes part whenever it is full rank (it is far more accurate on utilities that grow
    #    with |S|); per player, only where it identifies that player's variance.
    plain = _fit(x, yprime, w, q, unit, stratum, fraction)
    groups = _intercept_groups(size_index, unit, n)
    centred = None
    if center in ("size", "auto"):
        xc, yc = _center_by_size(x, yprime, w, groups)
        # one intercept per size can saturate the fit (few residual units, a variance on few degrees of
        # freedom, or units fitted exactly): adjacent sizes then share intercepts, so that at most half of
        # the plain fit's residual units go to intercepts
        coarse = _coarse_groups(size_index, groups, max(1, (len(np.unique(unit)) - plain.rank) // 2))
        if coarse is not None:
            groups = coarse
            xc, yc = _center_by_size(x, yprime, w, groups)
        candidate = _fit(xc, yc, w, q, unit, stratum, fraction, intercept_groups=groups)
        centred = candidate if candidate.rank == n - 1 else None
    lam = None
    if centred is None:
        chosen, used = plain, "none"
    elif center == "size":
        chosen, used = centred, "size"
    else:
        # per-player blend, re-projected onto Σφ = t (P removes the mean over players); a player whose
        # variance the centred fit cannot estimate but the plain fit can keeps its plain fit (λ = 0) and
        # so its interval; where neither fit can, its interval is infinite either way and the blend keeps
        # the more accurate value
        lam = _blend_weights(plain, centred, layer, unit, layer_fraction)
        assert centred.identified is not None and plain.identified is not None
        lam = np.where(~centred.identified & plain.identified, 0.0, lam)
        chosen = _Fit(
            offset=_blend(plain.offset, centred.offset, lam),
            lin=_blend(plain.lin, centred.lin, lam),
            g=_blend(plain.g, centred.g, lam, player_axis=1),
            rank=max(plain.rank, centred.rank),
            identified=plain.identified & (centred.identified | (lam == 0.0)),
            params=plain.params + lam * (centred.params - plain.params),
            imputed=(1.0 - lam) * plain.imputed + lam * centred.imputed,
        )
        used = "auto"
    value = total / n + chosen.offset

    # 3. sampling variance
    if ci == "analytic":
        var = _stratified_cov(chosen.g, chosen.g, stratum, unit, fraction)
        if lam is not None:
            assert centred is not None
            # λ was chosen on these data to minimise this very estimate, so the estimate at λ is optimistic;
            # report no less than (1-λ)·Var(φ_p) + λ·Var(φ_c), an upper bound of the blend's variance for
            # every fixed λ (Cauchy-Schwarz), which the selection of λ cannot push below either fit's own
            bound = (1.0 - lam) * _stratified_cov(plain.g, plain.g, stratum, unit, fraction) + lam * _stratified_cov(
                centred.g, centred.g, stratum, unit, fraction)
            var = np.maximum(var, bound)
        var = var + chosen.imputed
    elif ci == "bootstrap":

        def refit(wb: np.ndarray) -> np.ndarray:
            if used != "auto":
                xb, yb = (x, yprime) if used == "none" else _center_by_size(x, yprime, wb, groups)
                return q @ _solve_constrained(xb, yb, wb)[0]
            # the blend weight is re-estimated inside every replicate (its selection is part of the estimator)
            keep = wb > 0
            xk, yk, wk, sk = x[keep], yprime[keep], wb[keep], groups[keep]
            b_plain = _fit(xk, yk, wk, q, unit[keep], stratum[keep], fraction)
            b_centred = _fit(*_center_by_size(xk, yk, wk, sk), wk, q, unit[keep], stratum[keep], fraction,
                             intercept_groups=sk)
            lam_b = _blend_weights(b_plain, b_centred, layer[keep], unit[keep], layer_fraction)
            return _blend(b_plain.offset, b_centred.offset, lam_b)

        var = _bootstrap_regression(refit, w, n, stratum, unit, fraction, n_boot, seed) + chosen.imputed
    else:
        raise unknown_ci(ci)

    # 4. a zero sampling variance is trusted only when the whole fit is identified and exact (an additive
    #    game, or a pairwise one under a paired design); otherwise a player at zero sits on a few units that
    #    happen to fit exactly (too few rows to see its error), and its variance is not identified
    sampled_rows = fraction[stratum] < 1.0
    scale = np.abs(chosen.lin).max(axis=1, keepdims=True)
    depends = (np.abs(chosen.lin) > 1e-9 * np.where(scale > 0, scale, 1.0)) & sampled_rows[None, :]
    identified = distrust_zero_variance(var, chosen.identified, depends=depends.any(axis=1),
                                        scale=max(float(np.abs(yprime).max()), abs(total) / n))

    # 5. utility noise the sampling variance cannot see: enumerated share of strata + the endpoints, each
    #    coalition with its own (shrunk) replicate variance
    noise = np.zeros(n)
    if data.noise_var is not None:
        share = fraction[stratum]
        noise = (chosen.lin**2) @ (data.noise_var_rows() * share)
        # ∂φ/∂v_full and ∂φ/∂v_empty (φ is affine in both; t enters φ as t/n and through y')
        d_total = 1.0 / n - chosen.lin @ (sizes / n)
        d_empty = -d_total - chosen.lin @ np.ones(u)
        var_empty, var_full = data.noise_var_endpoints()
        noise = noise + d_total**2 * var_full + d_empty**2 * var_empty

    # the error's correlation across players, for simultaneous statements: the centred unit influence rows
    # of every sampled (collapsed) stratum, the endpoints' noise as two more columns, the rest per player
    gu = _per_unit(chosen.g, unit)
    columns = [(gu[members] - gu[members].mean(axis=0)).T * math.sqrt(fpc * c / (c - 1))
               for members, c, fpc in _sampled_strata(stratum, unit, fraction)]
    cov_diag = np.broadcast_to(np.asarray(chosen.imputed, dtype=np.float64), (n,)).copy()
    if data.noise_var is not None:
        cov_diag += (chosen.lin**2) @ (data.noise_var_rows() * fraction[stratum])
        columns.append(np.column_stack([d_total * math.sqrt(var_full), d_empty * math.sqrt(var_empty)]))
    cov_factor = np.concatenate(columns, axis=1) if columns else np.zeros((n, 0))

    # 6. finite-sample inflation: the variance estimate rests on few units per stratum, so it is itself
    #    noisy; widen by the t quantile at its effective degrees of freedom (see _t_inflation)
    dof = _effective_dof(chosen.g, stratum, unit, fraction, chosen.params)
    noise_dof = float(max(data.noise_dof, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        total_dof = (var + noise) ** 2 / (var**2 / dof + noise**2 / noise_dof)
    total_dof = np.where(var + noise > 0, total_dof, np.inf)
    var = (var + noise) * _t_inflation(total_dof)

    # 7. a lower bound on the evaluations still needed: one sampling unit (a complementary pair counts once)
    #    per missing rank, one more for a residual to see the error by, and one more in every sampled stratum
    #    that has a single unit
    more = 0
    n_units = len(np.unique(unit))
    if not identified.all():
        more = _more_evaluations(n, plain.rank, unit)
    layer_counts = np.bincount(size_index, minlength=n + 1).tolist()
    extras: dict[str, Any] = {"rank": chosen.rank, "layer_counts": layer_counts, "n_units": n_units,
                              "center": used, "params": float(np.mean(chosen.params))}
    if lam is not None:
        extras["center_weight"] = lam.tolist()
    extras["dof"] = [float(d) if np.isfinite(d) else None for d in total_dof]
    return value, var, extras, identified, more, cov_factor, cov_diag


RANK_MARGIN = 0.25
"""Share of the missing rank added again to ``more_evaluations`` for units that repeat a known direction
(measured: with no margin 39 of 165 grown plans at n = 30 and 100 stayed short, with 0.25 none)."""


def _more_evaluations(n: int, rank: int, unit: np.ndarray) -> int:
    """Evaluations to add to a prefix-stable plan until every player is identified.

    Missing rank d = n - 1 - rank needs d new sampling units that add a direction, and (1 + ``RANK_MARGIN``)·d
    more for the ones a design spends on directions it already has; one more leaves a residual to pool
    the variance from. Units become evaluations at the plan's rows per unit (2 for a paired design), plus
    the open units (a pair whose second coalition is the next row of the plan).
    """
    n_units = len(np.unique(unit))
    rows_in = np.bincount(unit)
    rows_in = rows_in[rows_in > 0]
    per_unit = max(1, round(len(unit) / n_units))
    deficit = n - 1 - rank
    units_needed = max(deficit + math.ceil(RANK_MARGIN * deficit) + max(0, 1 - (n_units - rank)), 1)
    open_units = int(np.sum(rows_in < per_unit))
    return units_needed * per_unit + open_units


INFLATION_LEVEL = 0.95
"""The level at which :func:`_t_inflation` matches the t interval exactly."""


def _t_inflation(dof: np.ndarray, level: float = INFLATION_LEVEL) -> np.ndarray:
    """(t_{ν, (1+level)/2} / z_{(1+level)/2})² per player: a variance times this, with the normal interval
    of :func:`~contribshap.pipeline.core.estimators.estimate`, is the t interval at ν degrees of freedom (exactly
    at ``level`` = 0.95, the default; close to ν/(ν-2), the variance of t_ν, at other levels). ν is clipped
    to >= 1; ν = inf gives 1."""
    from scipy import stats

    p = 0.5 + level / 2.0
    nu = np.maximum(np.asarray(dof, dtype=np.float64), 1.0)
    t = np.where(np.isfinite(nu), stats.t.ppf(p, np.where(np.isfinite(nu), nu, 1.0)), stats.norm.ppf(p))
    return (t / stats.norm.ppf(p)) ** 2


def _per_unit(g: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Rows of g (u, k) summed per sampling unit: (units, k)."""
    gu = np.zeros((int(unit.max()) + 1, g.shape[1]))
    np.add.at(gu, unit, g)
    return gu


def _sampled_strata(stratum: np.ndarray, unit: np.ndarray, fraction: np.ndarray):
    """Yield (members (units,) bool, c, 1 - f_h) for every stratum that carries sampling variance
    (at least two units and not fully enumerated)."""
    n_units = int(unit.max()) + 1
    unit_stratum = np.zeros(n_units, dtype=np.int64)
    unit_stratum[unit] = stratum
    present = np.zeros(n_units, dtype=bool)
    present[unit] = True
    for h in np.unique(stratum):
        members = present & (unit_stratum == h)
        c = int(members.sum())
        fpc = 1.0 - fraction[h]
        if c >= 2 and fpc > 0:
            yield members, c, fpc


def _effective_dof(g: np.ndarray, stratum: np.ndarray, unit: np.ndarray, fraction: np.ndarray,
                   params: float | np.ndarray) -> np.ndarray:
    """Effective degrees of freedom (n,) of the stratified variance Σ_h V_h of each column of g.

    Satterthwaite over strata: ν_s = (Σ_h V_h)² / Σ_h V_h² / (c_h - 1), c_h the units of sampled stratum h
    (a stratum with 2 units gives its term 1 degree of freedom). The residuals come from a fit that spent
    ``params`` (rank, plus the per-size intercepts of the centred fit) of the U sampled units, so ν_s is
    scaled by (U - params) / U (at least 1 / U): the share of the units' spread that is left to the
    residuals. inf where the variance is zero.
    """
    gu = _per_unit(g, unit)
    total = np.zeros(g.shape[1])
    squares = np.zeros(g.shape[1])
    sampled_units = 0
    for members, c, fpc in _sampled_strata(stratum, unit, fraction):
        sampled_units += c
        a = gu[members] - gu[members].mean(axis=0)
        part = fpc * c / (c - 1) * (a * a).sum(axis=0)
        total += part
        squares += part**2 / (c - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        nu = np.where(squares > 0, total**2 / squares, np.inf)
    if sampled_units == 0:
        return nu
    share = np.maximum(sampled_units - np.asarray(params, dtype=np.float64), 1.0) / sampled_units
    return nu * share


def _stratified_cov(
    g1: np.ndarray, g2: np.ndarray, stratum: np.ndarray, unit: np.ndarray, fraction: np.ndarray
) -> np.ndarray:
    """Per column, Σ_h (1 - f_h) · c_h/(c_h - 1) · Σ_units (g1_u - ḡ1_h)(g2_u - ḡ2_h), g summed per unit."""
    gu1 = _per_unit(g1, unit)
    gu2 = gu1 if g2 is g1 else _per_unit(g2, unit)
    cov = np.zeros(g1.shape[1])
    for members, c, fpc in _sampled_strata(stratum, unit, fraction):
        a, b = (gu[members] - gu[members].mean(axis=0) for gu in (gu1, gu2))
        cov += fpc * c / (c - 1) * (a * b).sum(axis=0)
    return cov


def _bootstrap_regression(
    refit: Any,
    w: np.ndarray,
    n: int,
    stratum: np.ndarray,
    unit: np.ndarray,
    fraction: np.ndarray,
    n_boot: int,
    seed: int,
) -> np.ndarray:
    """Variance of φ over ``n_boot`` refits (``refit(row weights) -> φ offset``) with units resampled within
    strata (enumerated strata fixed)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB007]))
    groups: list[np.ndarray] = []
    for h in np.unique(stratum):
        if fraction[h] >= 1.0:
            continue
        groups.append(np.unique(unit[stratum == h]))
    draws = np.empty((n_boot, n))
    for b in range(n_boot):
        mult = np.ones(int(unit.max()) + 1)
        for units in groups:
            picks = rng.integers(0, len(units), size=len(units))
            mult[units] = np.bincount(picks, minlength=len(units))
        draws[b] = refit(w * mult[unit])
    return draws.var(axis=0, ddof=1)


# --------------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------------
def _fit_method(method: str):
    default_center = "auto" if method == "kernelshap" else "none"

    def fit(data: Data, *, ci: str, n_boot: int, seed: int, options: dict[str, Any]) -> MethodResult:
        ci = "analytic" if ci == "auto" else ci
        center = options.get("center", default_center)
        if center not in CENTER_KINDS:
            raise ValueError(f"center must be one of {', '.join(CENTER_KINDS)}; got {center!r}.")
        value, var, extras, identified, more, factor, diag = _regression(
            data, method, ci, n_boot, seed, bool(options.get("deterministic", False)), center
        )
        return MethodResult(value=value, var=var, ci=ci, extras=extras, identified=identified, more_evaluations=more,
                            cov_factor=factor, cov_diag=diag)

    fit.__name__ = fit.__qualname__ = f"fit_{method}"
    return fit


register_method("kernelshap", _fit_method("kernelshap"), options={"ci", "n_boot", "deterministic", "center"},
                efficient=True, summary="post-stratified kernel regression, size-centred blend (default)")
register_method("leverage_shap", _fit_method("leverage_shap"), options={"ci", "n_boot", "deterministic"},
                efficient=True, summary="Leverage SHAP: Horvitz-Thompson weights of the leverage design")
register_method("kernelshap_paper", _fit_method("kernelshap_paper"),
                options={"ci", "n_boot", "draw_counts", "deterministic"}, efficient=True,
                summary="the paper's KernelSHAP: one weight per draw, no stratification")
