"""``contribshap``: the command line (typer).

Commands: ``check CONFIG``, ``run CONFIG``, ``status STORE``, ``reduce STORE``, ``report STORE``,
``evaluate STORE``, ``repair STORE``, ``demo``. Known errors (bad config, foreign or damaged store, busy
store, failed prepare, a file that cannot be read or written: full disk, read-only store) print one line
``error: ...`` on stderr and exit with code 2; ``--help`` works everywhere.

New commands are appended at the end of this file as ``@app.command()`` functions (see ``submit``).
"""

from __future__ import annotations

import errno
import json
import sys
import warnings
from pathlib import Path

import typer
from contribshap.pipeline.contracts.errors import ContribshapError

app = typer.Typer(
    name="contribshap",
    help="Shapley credit for the data contributors of a diffusion model (sparsified fine-tuning + Ray).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



def shipped_config(name: str) -> Path:
    """The path of a config shipped with the package (``configs/<name>``, installed as ``contribshap.configs``)."""
    from importlib.resources import files

    return Path(str(files("contribshap.configs") / name))

#: errno values of an ``OSError`` the CLI reports as one line even when it names no file.
_FILE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def _echo_err(text: str) -> None:
    typer.echo(text, err=True)


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def _show_version(value: bool) -> None:
    if value:
        from contribshap.pipeline import __version__

        typer.echo(f"contribshap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version,
                                 help="Print the version and exit."),
) -> None:
    """Shapley credit for the data contributors of a diffusion model (sparsified fine-tuning + Ray)."""


def _lazy(module: str, attribute: str, owner: str):
    """Import ``module.attribute`` or fail with one line saying which part is missing."""
    import importlib

    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise ContribshapError(
            f"{module}.{attribute} is not available ({error}); it is part of {owner}: update the checkout"
        ) from None


def _run_and_show(config: Path, *, store: Path | None, address: str | None, force_new: bool, progress: bool,
                  quiet: bool = False, as_json: bool = False, demo: bool = False) -> None:
    """``run`` and ``demo``: the run; for the demo also its sample grid and report; then one summary.

    Output: live bars while it works and one summary at the end (counts, the credit table, the paths), on
    stderr; ``quiet``: nothing but warnings and errors on stderr, and the report (demo) or estimates (run)
    path on stdout; ``as_json``: one JSON document on stdout (:func:`_summary_document`).
    """
    from contribshap.pipeline.config.schema import load_config
    from contribshap.pipeline.dispatch.ray_context import LazyRay
    from contribshap.pipeline.products.run import run as run_driver

    cfg = load_config(config)
    chatty = not (quiet or as_json)
    # 1. The run. The demo holds one Ray for the run and its sample grid (the run's worker is reused).
    with LazyRay(address, cfg.ray) as session:
        if demo:
            session.ensure()
        summary = run_driver(cfg, store_path=store, address=address, force_new=force_new,
                             progress=progress and chatty)
        # 2. Demo of a diffusion game: the full model next to the model without the top contributors.
        grid = _demo_sample_grid(cfg, summary.store, address) if demo and cfg.game.kind == "diffusion" else None
    # 3. Demo: the report.
    report = _build_report_or_warn(summary.store) if demo else None
    # 4. One summary.
    estimates_path = summary.store / "estimates" / "estimates.json"
    if as_json:
        typer.echo(json.dumps(_summary_document(summary, cfg, estimates_path, report, grid), indent=1))
    elif quiet:
        typer.echo(str(report or estimates_path))
    else:
        _show_summary(summary, estimates_path, report, level=cfg.level)


def _demo_sample_grid(cfg, store: Path, address: str | None) -> Path | None:
    """The demo's grid of the full model next to the model without its top contributors (and without
    each flagged one): one Ray task, a few seconds; skipped when the grid of the same panels exists."""
    from contribshap.pipeline.contracts.io import atomic_write_json
    from contribshap.pipeline.dispatch.driver import run_counterfactual_samples
    from contribshap.pipeline.products.report import SAMPLES_WITHOUT_JSON, SAMPLES_WITHOUT_PNG, sample_panels

    panels, doc = sample_panels(store)
    if not panels:
        return None
    png, caption = store / SAMPLES_WITHOUT_PNG, store / SAMPLES_WITHOUT_JSON
    try:
        if png.is_file() and json.loads(caption.read_text()).get("masks") == doc["masks"]:
            return png
    except (OSError, ValueError):
        pass
    try:
        run_counterfactual_samples(cfg, store, panels, png, address=address)
    except ContribshapError as error:
        _echo_err(f"warning: no sample grid without the top contributors: {error}")
        return None
    atomic_write_json(caption, doc)
    return png


def _build_report_or_warn(store: Path) -> Path | None:
    try:
        build_report = _lazy("contribshap.pipeline.products.report", "build_report", "the report")
        return build_report(store)
    except ContribshapError as error:
        _echo_err(f"warning: no report: {error}")
        return None


def _summary_document(summary, cfg, estimates_path: Path, report: Path | None, grid: Path | None) -> dict:
    """``run --json`` / ``demo --json``: what the run did and where its results are."""
    return {
        "name": cfg.name, "store": str(summary.store), "config_hash": summary.namespace,
        "evaluated": summary.evaluated, "failed": summary.failed, "already_done": summary.skipped,
        "planned": summary.planned, "rounds": summary.rounds, "stopped_because": summary.stopped_because,
        "wall_s": round(summary.wall_s, 3), "prepare_s": round(summary.prepare_s, 3),
        "estimates": str(estimates_path) if estimates_path.is_file() else None,
        "report": str(report) if report else None, "samples": str(grid) if grid else None,
    }


def _show_summary(summary, estimates_path: Path, report: Path | None, *, level: float | None = None) -> None:
    """The end of ``run`` / ``demo`` on stderr: the counts, one credit table (a column per property), paths."""
    from contribshap.pipeline.products.report import load_ordered_estimates
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:  # a log file: no wrapping of the table at 80 columns
        console = Console(stderr=True, width=200)
    prepare = f", prepare {summary.prepare_s:.1f} s" if summary.prepare_s >= 1 else ""
    console.print(
        f"{summary.store}: {summary.evaluated} evaluated, {summary.failed} failed, {summary.skipped} already done "
        f"in {summary.rounds} round(s), {summary.wall_s:.1f} s{prepare} ({summary.stopped_because})",
        highlight=False, markup=False, soft_wrap=True)
    if estimates_path.is_file():
        from contribshap.pipeline.storage.store import Store

        contributors = Store(summary.store).read_manifest().get("contributors") or []
        table = credit_table(load_ordered_estimates(summary.store), contributors, level=level)
        if table is not None:
            console.print(table)
    more = f"  (every method and interval: contribshap reduce {summary.store})"
    lines = [("store", str(summary.store)), ("estimates", f"{estimates_path}{more}")]
    lines.append(("report", str(report) if report else f"contribshap report {summary.store}  (builds it)"))
    for label, value in lines:
        console.print(f"{label:<10}{value}", highlight=False, markup=False, soft_wrap=True)


def credit_table(estimates: dict, contributors: list[dict], *, level: float | None = None):
    """One compact rich table of the default estimator: a row per contributor (ranked by its credit for the
    first property: rank 1 = the most valuable; :mod:`contribshap.pipeline.products.credit`), a column of
    credit per property; the first property also shows its interval (at ``level``, e.g. 0.95). Harmful
    contributors (credit interval wholly below 0) follow in a section of their own. A value whose interval
    the evaluations cannot identify reads ``not identified`` (first property) or carries ``*``; the caption
    says each lower-is-better property once and how many more evaluations are needed. None when there is
    no estimate.

    Args:
        estimates: the ``reduce --json`` document in the run's order
            (``contribshap.pipeline.products.report.load_ordered_estimates``). contributors: the manifest's.
    """
    import math

    from contribshap.pipeline.products.credit import direction_note, is_harmful, oriented_people
    from contribshap.pipeline.products.report import headline
    from rich import box
    from rich.table import Table

    lead = headline(estimates)
    if lead is None:
        return None
    prop, method = lead
    docs = {p: by[method] for p, by in estimates.items() if isinstance(by.get(method), dict)}
    people = {p: {str(c["id"]): c for c in oriented_people(doc)} for p, doc in docs.items()}
    lead_doc = docs[prop]

    def credit_of(p: str, cid: str) -> float:
        value = people[p].get(cid, {}).get("credit")
        return float(value) if value is not None else math.nan

    order = sorted((str(c["id"]) for c in contributors), key=lambda cid: -credit_of(prop, cid)
                   if math.isfinite(credit_of(prop, cid)) else math.inf)
    level_text = f" · {level:.0%} CI" if level else ""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left", caption_justify="left",
                  title=f"credit by {method}{level_text} · {int(lead_doc.get('n_evaluations') or 0)} evaluations · "
                        f"rank by {prop} credit (1 = most valuable)\n"
                        f"{direction_note(prop, lead_doc.get('direction'))}")
    table.add_column("#", justify="right")
    table.add_column("contributor", no_wrap=True)
    table.add_column(prop, justify="right")
    table.add_column(f"{prop} CI", justify="right")
    for other in docs:
        if other != prop:
            table.add_column(other, justify="right")
    names = {str(c["id"]): (f"{c['name']} ({c['id']})" if c.get("name") not in (None, c["id"]) else str(c["id"]))
             for c in contributors}
    unknown = False
    rows: dict[bool, list[list[str]]] = {False: [], True: []}
    for rank, cid in enumerate(order, start=1):
        person = people[prop].get(cid, {})
        if person.get("identified", True):
            interval = f"[{_num_text(person.get('credit_low'))}, {_num_text(person.get('credit_high'))}]"
        else:
            interval, unknown = "not identified", True
        cells = [str(rank), names.get(cid, cid), _num_text(person.get("credit")), interval]
        for other in docs:
            if other != prop:
                entry = people[other].get(cid, {})
                mark = "" if entry.get("identified", True) else " *"
                unknown = unknown or bool(mark)
                cells.append(_num_text(entry.get("credit")) + mark)
        rows[is_harmful(person)].append(cells)
    for cells in rows[False]:
        table.add_row(*cells)
    if rows[True]:
        table.add_section()
        table.add_row("", f"harmful for {prop} (credit interval below 0):", *[""] * (len(table.columns) - 2))
        for cells in rows[True]:
            table.add_row(*cells)
    lower = [p for p, doc in docs.items() if doc.get("direction") == "lower" and p != prop]
    captions = [f"{', '.join(lower)}: lower is better; credit = reduction"] if lower else []
    if unknown:
        more = max(int(doc.get("more_evaluations") or 0) for doc in docs.values())
        captions.append(f"not identified / *: the evaluations cannot pin these values down (interval (-inf, inf)); "
                        f"{method} needs at least {max(more, 1)} more evaluations: raise design.budget")
    if captions:
        table.caption = "\n".join(captions)
    return table


def _num_text(value) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return "-"


@app.command()
def check(config: Path = typer.Argument(..., help="YAML config to validate.")) -> None:
    """Validate CONFIG, every local path it names and the store folder; list all problems at once; do no work."""
    from contribshap.pipeline.config.schema import config_hash, load_config, plan_hash, resolve_store
    from contribshap.pipeline.contracts.errors import ConfigError
    from contribshap.pipeline.games.python_game import GameError, option_problems

    cfg = load_config(config, check_store=True)
    try:  # a python game's options against its function's signature (imports the game's module)
        problems = option_problems(cfg)
    except GameError as error:
        problems = [str(error)]
    if problems:
        raise ConfigError(f"{config}: " + " | ".join(problems))
    n = cfg.n_players()
    typer.echo(
        f"ok: {config} · name {cfg.name} · game {cfg.game.kind}"
        f"{f' ({n} players)' if n else ''} · design {cfg.design.kind}"
        f"{f' budget {cfg.design.budget}' if cfg.design.budget else ''} · store {resolve_store(cfg)} · "
        f"config hash {config_hash(cfg)} · plan hash {plan_hash(cfg)}"
    )
    _check_data(cfg)


def _check_data(cfg) -> None:
    """``check``'s data summary (diffusion games): images and classes per contributor, unreadable and
    byte-identical files, images shared between contributors; unreadable files are an error (exit 2)."""
    from contribshap.pipeline.contracts.errors import ConfigError
    from contribshap.pipeline.games.factory import data_summary
    from contribshap.pipeline.products.overlap import data_summary_lines

    summary = data_summary(cfg)
    for line in data_summary_lines(summary):
        typer.echo(line)
    unreadable = ((summary or {}).get("files") or {}).get("unreadable") or []
    if unreadable:
        shown = ", ".join(f"{f} ({why})" for f, why in unreadable[:3])
        raise ConfigError(f"game.data: {len(unreadable)} listed image file(s) cannot be read ({shown}); "
                          "fix or remove them in the CSV")


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML config."),
    address: str = typer.Option(None, "--address", help="Ray address: auto, host:port (default: config, else local)."),
    store: Path = typer.Option(None, "--store", help="Store folder (default: the config's `store`)."),
    force_new: bool = typer.Option(False, "--force-new", help="Move an existing store of another config aside."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No bars, no tables: print the estimates path only."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout (store, counts, paths)."),
) -> None:
    """Prepare if needed, plan, dispatch the missing evaluations on Ray, reduce. Re-run to resume."""
    _run_and_show(config, store=store, address=address, force_new=force_new, progress=progress, quiet=quiet,
                  as_json=as_json)


@app.command()
def status(
    store: Path = typer.Argument(..., help="Store folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON on stdout."),
) -> None:
    """Planned / done / failed / remaining evaluations and ETA of STORE (no Ray needed)."""
    from contribshap.pipeline.products.status import store_status

    info = store_status(store)
    try:  # the Ray Jobs state, when the store was submitted with `contribshap submit`
        from contribshap.pipeline.dispatch.submit import job_status

        info["job"] = job_status(store)
    except Exception:
        info["job"] = None
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    eta = "-" if info["eta_s"] is None else f"{info['eta_s']:.0f} s"
    driver = info["driver"]
    lines = [
        f"store {info['store']} ({info['name']}, config hash {info['config_hash']}, "
        f"{info['contributors']} contributors)",
        f"planned {info['planned']} evaluations of {info['planned_coalitions']} coalitions in {info['rounds']} round(s): "
        f"ok {info['ok']}, failed {info['failed']}, remaining {info['remaining']}, ETA {eta}",
    ]
    if info.get("by_fidelity"):
        lines.append("fidelity: " + ", ".join(f"{name} {part['ok']}/{part['planned']} ok"
                                              + (f" ({part['failed']} failed)" if part["failed"] else "")
                                              for name, part in info["by_fidelity"].items()))
    if driver:
        lines.append(f"driver: pid {driver.get('pid')} on {driver.get('host')}")
    if info.get("job"):
        lines.append(f"job: {info['job']}")
    for failed in info["failed_evaluations"][:10]:
        lines.append(f"failed: {failed['mask']} r{failed['replicate']}: {failed['error']}")
    if info["unreadable"]:
        lines.append(f"unreadable files (will be re-run): {', '.join(info['unreadable'][:10])}")
    if info.get("overlap") is not None:
        from contribshap.pipeline.products.overlap import overlap_lines

        lines.extend(overlap_lines(info["overlap"]))
    from contribshap.pipeline.products.planning import plan_lines, read_plan_projection

    projection = read_plan_projection(store)
    if projection is not None:
        lines.extend(plan_lines(projection))
    typer.echo("\n".join(lines))


@app.command()
def plan(
    store: Path = typer.Argument(..., help="A store to use as the pilot (a first round, or a cheap 2n-3n run)."),
    halfwidth: float = typer.Option(None, "--halfwidth", help="Target: largest CI half-width of any contributor."),
    relative: bool = typer.Option(False, "--relative", help="--halfwidth is a share of |v(N) - v(empty)|."),
    top_k: int = typer.Option(None, "--top-k", help="Target: the top K contributors resolved (simultaneous, 90%)."),
    harmful_q: float = typer.Option(None, "--harmful-fdr", help="Target: the harmful set at this FDR (e.g. 0.1)."),
    prop: str = typer.Option(None, "--property", help="Property (default: the first)."),
    method: str = typer.Option(None, "--method", help="Regression method (default: the config's first)."),
    seconds: float = typer.Option(None, "--seconds-per-evaluation",
                                  help="Seconds one evaluation takes on the target hardware (default: measured)."),
    as_json: bool = typer.Option(False, "--json", help="Print the projection as JSON on stdout."),
) -> None:
    """Project the evaluations (and GPU-hours) that reach a precision target, from STORE as a pilot; written to
    <store>/estimates/plan.json and shown by `status` and the report."""
    from contribshap.pipeline.products.planning import plan_lines, plan_store

    targets = [t for t in (halfwidth, top_k, harmful_q) if t is not None]
    if len(targets) != 1:
        raise typer.BadParameter("give exactly one target: --halfwidth H, --top-k K or --harmful-fdr Q")
    try:
        doc = plan_store(store, halfwidth=halfwidth, relative=relative, top_k=top_k, harmful_q=harmful_q, prop=prop,
                         method=method, seconds_per_evaluation=seconds)
    except ValueError as error:
        raise ContribshapError(f"plan: {error}") from None
    typer.echo(json.dumps(doc, indent=2, default=str) if as_json else "\n".join(plan_lines(doc)))


@app.command()
def reduce(
    store: Path = typer.Argument(..., help="Store folder."),
    method: list[str] = typer.Option(None, "--method", help="Estimator method (repeatable; default: config)."),
    as_json: bool = typer.Option(False, "--json", help="Print the estimates document as JSON on stdout."),
    shares: bool = typer.Option(False, "--shares", help="Also split a pool by credit: estimates/shares.{csv,parquet,json}."),
    pool: float = typer.Option(1.0, "--pool", help="--shares: the amount to split (default 1: fractions)."),
    floor: float = typer.Option(0.0, "--floor", help="--shares: minimum share, a fraction of the pool (<= 1/n)."),
    cap: float = typer.Option(None, "--cap", help="--shares: maximum share, a fraction of the pool (>= 1/n)."),
    draws: int = typer.Option(200, "--draws", help="--shares: draws of the share intervals (>= 20)."),
) -> None:
    """Estimate per property and method from STORE; write estimates/; print a table (or --json)."""
    from contribshap.pipeline.config.schema import KNOWN_METHODS
    from contribshap.pipeline.products.reduce import estimates_document, reduce_store
    from contribshap.pipeline.products.status import require_ok_evaluations
    from contribshap.pipeline.storage.store import Store

    for name in method or []:
        if name not in KNOWN_METHODS:
            raise ContribshapError(f"--method: unknown method {name!r}; valid methods: {', '.join(KNOWN_METHODS)}")
    if not shares and (pool != 1.0 or floor != 0.0 or cap is not None or draws != 200):
        raise ContribshapError("--pool, --floor, --cap and --draws set the payout shares; add --shares")
    require_ok_evaluations(store, what="nothing to reduce")  # before anything is written (exit code 3)
    rows: dict = {}
    results = reduce_store(store, methods=list(method) if method else None, write=True, show=not as_json,
                           rows_out=rows)
    if as_json:
        contributors = Store(store).read_manifest()["contributors"]
        typer.echo(json.dumps(estimates_document(results, contributors), indent=2))
    if shares:
        _reduce_shares(Path(store), results, rows, pool=pool, floor=floor, cap=cap, draws=draws, show=not as_json)


def _reduce_shares(store: Path, results: dict, rows: dict, *, pool: float, floor: float, cap: float | None,
                   draws: int, show: bool) -> None:
    """``reduce --shares``: the shares of every property by the first reduced method, written and printed."""
    from contribshap.pipeline.products.shares import print_shares, shares_document, store_shares, write_shares
    from contribshap.pipeline.storage.saved_config import read_saved_config
    from contribshap.pipeline.storage.store import Store

    if draws < 20:
        raise ContribshapError(f"--draws {draws}: use at least 20 draws")
    method = next(iter(next(iter(results.values()))))
    seed = read_saved_config(store).seed
    try:
        by_property = store_shares(results, rows, method=method, pool=pool, floor=floor, cap=cap, n_draws=draws,
                                   seed=seed)
    except ValueError as error:
        raise ContribshapError(f"--shares: {error}") from None
    contributors = Store(store).read_manifest()["contributors"]
    document = shares_document(by_property, contributors, method=method)
    _, csv_path, pq_path = write_shares(store, document)
    if show:
        print_shares(document)
        _echo_err(f"shares: {csv_path}, {pq_path}")


@app.command()
def report(
    store: Path = typer.Argument(..., help="Store folder."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: <store>/report)."),
) -> None:
    """Build the HTML report (tables, plots) of STORE."""
    build_report = _lazy("contribshap.pipeline.products.report", "build_report", "the report")
    path = build_report(Path(store), out=out)
    typer.echo(str(path))


@app.command()
def evaluate(
    store: Path = typer.Argument(..., help="Store folder (after `contribshap run`)."),
    n_subsets: int = typer.Option(None, "--n-subsets", help="Held-out subsets (default: config)."),
    alpha: float = typer.Option(None, "--alpha", help="Fraction of contributors per held-out subset."),
    mode: str = typer.Option(None, "--mode", help="finetune (as the run) | sparsified_ft | ft | retrain."),
    seed: list[int] = typer.Option(None, "--seed", help="Training seed (repeatable; default: config)."),
    method: list[str] = typer.Option(None, "--method", help="Method to score (repeatable; default: all)."),
    counterfactual: bool = typer.Option(None, "--counterfactual/--no-counterfactual",
                                        help="Remove top/bottom-k and re-evaluate (default: config, on)."),
    top_k: list[float] = typer.Option(None, "--top-k", help="Removal fraction in (0, 1) (repeatable; default 0.1 and 0.2)."),
    cf_replicates: int = typer.Option(None, "--cf-replicates", help="Replicates per counterfactual coalition (default: config, 3)."),
    banzhaf_uniform: bool = typer.Option(None, "--banzhaf-uniform/--no-banzhaf-uniform",
                                         help="Evaluate Banzhaf's own uniform design (default: config, off)."),
    stratify_exclude: list[str] = typer.Option(None, "--stratify-exclude",
                                               help="Contributor id left out of the stratified LDS (repeatable; default: planted-*)."),
    json_out: bool = typer.Option(False, "--json", help="Print the evaluation document as JSON on stdout."),
    address: str = typer.Option(None, "--address", help="Ray address (default: local)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """LDS on held-out subsets (overall and stratified) and counterfactual removals for STORE."""
    import contextlib

    run_evaluate = _lazy("contribshap.pipeline.products.evaluate", "run_evaluate", "the evaluation")
    with contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext():
        doc = run_evaluate(Path(store), n_subsets=n_subsets, alpha=alpha, mode=mode, seeds=seed or None,
                           methods=method or None, counterfactual=counterfactual,
                           top_k=tuple(top_k or (0.1, 0.2)), counterfactual_replicates=cf_replicates,
                           banzhaf_uniform=banzhaf_uniform, stratify_exclude=stratify_exclude or None,
                           address=address, progress=progress)
    typer.echo(json.dumps(doc, indent=1) if json_out else str(Path(store) / "estimates" / "evaluation.json"))


@app.command()
def demo(
    ci: bool = typer.Option(False, "--ci", help="The CI-sized demo (configs/demo_ci.yaml)."),
    address: str = typer.Option(None, "--address", help="Ray address (default: local)."),
    force_new: bool = typer.Option(False, "--force-new", help="Start the demo store afresh."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No bars, no tables: print the report path only."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout (store, counts, paths)."),
) -> None:
    """Run the embedded digits demo (configs/demo.yaml) end to end: the run, a sample grid without the top
    contributors, the report (its path ends the summary)."""
    config = shipped_config("demo_ci.yaml" if ci else "demo.yaml")
    if not config.is_file():
        raise ContribshapError(f"{config} is missing; it ships with the repository: update the checkout")
    _run_and_show(config, store=None, address=address, force_new=force_new, progress=progress, quiet=quiet,
                  as_json=as_json, demo=True)


@app.command()
def submit(
    config: Path = typer.Argument(..., help="YAML config."),
    address: str = typer.Option(
        "http://127.0.0.1:8265", "--address", envvar="RAY_API_SERVER_ADDRESS",
        help="Ray dashboard URL of the cluster (Jobs API).",
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the job's log to the end; exit 1 unless it succeeded."),
    store: Path = typer.Option(None, "--store", help="Store folder (default: the config's `store`); same path on the cluster."),
    working_dir: Path = typer.Option(Path("."), "--working-dir", help="Folder uploaded with the job (python games)."),
    python: str = typer.Option("auto", "--python", help="Interpreter on the cluster (auto: this one for a local address, else `python`)."),
) -> None:
    """Submit `contribshap run CONFIG` as a Ray job; resubmitting attaches to the running job or resumes."""
    from contribshap.pipeline.dispatch.submit import submit as submit_job

    result = submit_job(config, address=address, wait=wait, store=store, working_dir=working_dir, python=python)
    typer.echo(result.submission_id)
    if wait and not result.succeeded:
        raise typer.Exit(1)


@app.command()
def repair(
    store: Path = typer.Argument(..., help="Store folder."),
    config: Path = typer.Option(None, "--config", help="The run's config (default: <store>/config.yaml)."),
) -> None:
    """Rebuild a lost plan.parquet or a damaged manifest.json of STORE from the config and the evaluation
    files (nothing is evaluated again; damaged files are moved aside), and remove temporary files of
    stopped writers."""
    from contribshap.pipeline.products.repair import repair_store

    report = repair_store(store, config=config)
    typer.echo("\n".join(report.lines()))


def main(argv: list[str] | None = None) -> int:
    """Console entry point: known errors -> one line on stderr and exit code 2; a usage error (unknown
    option, missing or bad argument) -> the usage line and the error, exit code 2, no traceback."""
    from typer._click.exceptions import ClickException  # typer raises these with standalone_mode=False
    from typer.exceptions import Abort, Exit

    warnings.formatwarning = _format_warning
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="contribshap", standalone_mode=False)
    except ContribshapError as error:
        _echo_err(f"error: {error}")
        return getattr(error, "exit_code", 2)  # 3: the store holds no ok evaluation (status.py)
    except OSError as error:  # a file the command could not read or write: full disk, read-only store, ...
        from contribshap.pipeline.contracts.io import describe_os_error

        if error.filename is None and error.errno not in _FILE_ERRNOS:
            raise  # not a file problem (a connection error has its own message)
        _echo_err(f"error: {describe_os_error(error)}")
        return 2
    except Exit as done:
        return int(done.exit_code or 0)
    except ClickException as error:
        error.show()
        return 2
    except (Abort, KeyboardInterrupt):
        _echo_err("interrupted; run the same command again to resume")
        return 130
    return code if isinstance(code, int) else 0  # typer.Exit(n) comes back as a return value here


if __name__ == "__main__":
    sys.exit(main())
