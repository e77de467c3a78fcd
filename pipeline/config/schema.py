"""Run configuration: YAML -> validated pydantic models, with hashes that decide what a store may hold.

Load with :func:`load_config`; it reports every problem of a file at once, as one line per problem
joined by `` | `` (key path, what is wrong, how to fix it). Unknown keys and keys given twice are errors;
a file that is not UTF-8 text is refused in one line. ``load_config(..., check_store=True)`` (used by
``contribshap check``) also checks that the store folder can be created and written.

Top-level keys (all but ``game`` and ``design`` have defaults)::

    name: airport-6                 # free text, shown in reports
    store: runs/airport-6           # store folder (relative paths: from the working directory)
    seed: 0                         # the one seed; per-job seeds are derived from it
    game: {kind: python, target: "my_games:airport", n_players: 6}     # or kind: diffusion
    design: {kind: leverage, budget: 64, seed: 0, options: {}}        # budget counts empty+full too
    replicates: {coalition: 1, endpoints: 1}
    estimators: [kernelshap]
    level: 0.95
    stopping: {ci_abs: null, ci_rel: null, round_size: null, max_rounds: 1, property: null}
    ray: {address: null, num_cpus: 1, num_gpus: 0, max_in_flight: null, max_retries: 3,
          retry_exceptions: [ConnectionError, TimeoutError], local_num_cpus: null, temp_dir: null}
    evaluation: {holdout_alpha: 0.5, n_subsets: 50, seeds: [0], mode: finetune}
    low_fidelity: null              # or {game: {finetune: {steps: 10}}, budget: 400}: cheap control variate
    directions: {}                  # {property: lower | higher}: which way a property is better
                                    # (built-ins: PROPERTY_DIRECTIONS; others default to higher)

Hashes:
- :func:`config_hash` covers what changes the value of one coalition evaluation: the ``game`` section,
  ``seed`` and ``replicates``. It names the folder of evaluations in the store, so a changed game never
  mixes with old results.
- :func:`plan_hash` covers the design (kind, effective seed, options) but not its budget: a grown budget
  extends a store's plan; a changed design is refused.
Neither covers the store path, name, ray sizing, estimators, level, stopping, evaluation or directions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from contribshap.pipeline.config.diffusion import FINETUNE_MODES, PROPERTY_DIRECTIONS, DiffusionGameConfig
from contribshap.pipeline.contracts.errors import ConfigError
from contribshap.pipeline.core.designs import DESIGNS, EXACT_MAX_PLAYERS
from contribshap.pipeline.core.estimators import method_names
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "Config",
    "DesignConfig",
    "PythonGameConfig",
    "RayConfig",
    "StoppingConfig",
    "config_hash",
    "load_config",
    "plan_hash",
    "read_yaml",
    "resolve_store",
    "save_resolved",
    "store_location_problem",
]

#: Designs, from their one source :data:`contribshap.pipeline.core.designs.DESIGNS`.
KNOWN_DESIGNS: tuple[str, ...] = DESIGNS
#: Estimator methods, from the registry of :mod:`contribshap.pipeline.core.estimators` (built-in ones).
KNOWN_METHODS: tuple[str, ...] = method_names()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PythonGameConfig(_Strict):
    """``game.kind: python``: a callable ``module:function`` mapping a bool mask (n_players,) to values.

    Attributes:
        target: ``"module:function"``; the module is imported with the working directory on sys.path.
        n_players: number of contributors, a whole number n >= 2 (``true`` is not a number here).
        names: optional display names (length n); ids are ``p0..p{n-1}``.
        options: keyword arguments passed to the function after the mask (must be JSON-able).
    """

    kind: Literal["python"] = "python"
    target: str
    n_players: int
    names: list[str] | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("n_players", mode="before")
    @classmethod
    def _two_or_more(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"got {value!r}; use a whole number of contributors >= 2")
        if value < 2:
            raise ValueError(f"got {value}; a game needs at least 2 contributors, use n_players >= 2")
        return value

    @field_validator("target")
    @classmethod
    def _target_shape(cls, value: str) -> str:
        module, sep, function = value.partition(":")
        if not sep or not module or not function or not module.replace(".", "").replace("_", "a").isalnum():
            raise ValueError(f"got {value!r}; use 'module:function', e.g. 'my_games:airport'")
        return value


GameConfig = Annotated[PythonGameConfig | DiffusionGameConfig, Field(discriminator="kind")]


class DesignConfig(_Strict):
    """The coalition design of the plan (see :func:`contribshap.pipeline.core.designs.sample_coalitions`).

    Attributes:
        kind: one of :data:`KNOWN_DESIGNS` (``exact, shapley_kernel, paired, leverage, uniform, datamodel,
            loo``).
        budget: total coalitions to evaluate, counting the empty and the full one (>= n + 2);
            ``null`` for ``exact`` (2^n) and ``loo`` (n + 2).
        seed: plan seed; defaults to the top-level ``seed``.
        options: extra keyword arguments for the design (e.g. ``alpha`` for ``datamodel``).
    """

    kind: str
    budget: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in KNOWN_DESIGNS:
            raise ValueError(f"unknown design {value!r}; valid designs: {', '.join(KNOWN_DESIGNS)}")
        return value


class ReplicatesConfig(_Strict):
    """Evaluations per coalition: ``coalition`` for sampled ones, ``endpoints`` for the empty/full one."""

    coalition: int = Field(default=1, ge=1)
    endpoints: int = Field(default=1, ge=1)


class StoppingConfig(_Strict):
    """Adaptive rounds. Without a CI target the whole budget is planned in one round.

    Attributes:
        ci_abs: stop when the largest CI half-width is <= this (property units).
        ci_rel: stop when the largest CI half-width is <= ci_rel * |v_full - v_empty|.
        round_size: coalitions planned per round (default: budget / max_rounds).
        max_rounds: most rounds (>= 1).
        property: property whose CI is checked (default: every property must meet the target).
        method: estimator whose CI is checked (default: the first of ``estimators``).
    """

    ci_abs: float | None = Field(default=None, gt=0)
    ci_rel: float | None = Field(default=None, gt=0)
    round_size: int | None = Field(default=None, ge=1)
    max_rounds: int = Field(default=1, ge=1)
    property: str | None = None
    method: str | None = None


class RayConfig(_Strict):
    """Ray Core settings (none of them change results).

    Attributes:
        address: ``null`` starts a new quiet local instance (Ray's token authentication on); ``auto``
            joins the cluster this process runs on; ``host:port`` joins that cluster.
        num_cpus / num_gpus: resources per evaluation task (fractional GPUs allowed, e.g. 0.25).
        max_in_flight: most tasks submitted at once; ``null`` = 2 x the cluster's slots, re-read as
            nodes join.
        max_retries: Ray retries per task for worker deaths and for ``retry_exceptions``.
        retry_exceptions: exception class names (or base class names) treated as transient.
        local_num_cpus: CPUs of a local instance (``null``: all of this machine's).
        temp_dir: Ray session folder of a local instance (``null``: Ray's default).
        heartbeat_s: how often the driver refreshes ``driver.lock``; a lock older than
            ``stale_lock_s`` is taken over.
        resource_wait_s: how long the driver waits for a cluster to offer the per-evaluation resources
            (an autoscaler adding a GPU node) before it stops with a one-line error; ``null``: 60 s
            when joining a cluster, 0 for the local instance.
    """

    address: str | None = None
    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    max_in_flight: int | None = Field(default=None, ge=1)
    max_retries: int = Field(default=3, ge=0)
    retry_exceptions: list[str] = Field(default_factory=lambda: ["ConnectionError", "TimeoutError"])
    local_num_cpus: int | None = Field(default=None, ge=1)
    temp_dir: str | None = None
    heartbeat_s: float = Field(default=10.0, gt=0)
    stale_lock_s: float = Field(default=120.0, gt=0)
    resource_wait_s: float | None = Field(default=None, ge=0)

    @field_validator("num_gpus")
    @classmethod
    def _fractional_gpu(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError(f"got {value}; use a fraction in (0, 1] or a whole number of GPUs")
        return value


class EvaluationConfig(_Strict):
    """Settings read by ``contribshap evaluate`` (LDS and counterfactuals; see docs/evaluation.md).

    Attributes:
        holdout_alpha: fraction of contributors kept in each held-out subset, in (0, 1).
        n_subsets: number of held-out subsets.
        seeds: replicate seeds for held-out evaluations.
        mode: ``finetune`` (as the run), ``sparsified_ft``, ``ft`` or ``retrain`` (ground truth).
        stratify_exclude: contributor ids whose held-out subsets are left out of the stratified LDS (the
            LDS "without the obvious one"); None (default) = every planted contributor (ids
            ``planted-<name>``), [] = no stratified LDS.
        counterfactual: remove the top-k / bottom-k of each method and re-evaluate (default True).
        counterfactual_replicates: evaluations per counterfactual coalition (and of the full
            coalition), for the t-interval over replicates (default 3; 1 gives no interval).
        banzhaf_uniform: also evaluate a uniform sample of the design's size and score Banzhaf (MSR)
            on it (``banzhaf_uniform``); costs as many evaluations as the run (default False).
    """

    holdout_alpha: float = Field(default=0.5, gt=0, lt=1)
    n_subsets: int = Field(default=50, ge=2)
    seeds: list[int] = Field(default_factory=lambda: [0])
    mode: Literal[("finetune", *FINETUNE_MODES)] = "finetune"  # type: ignore[valid-type]
    stratify_exclude: list[str] | None = None
    counterfactual: bool = True
    counterfactual_replicates: int = Field(default=3, ge=1)
    banzhaf_uniform: bool = False


class LowFidelityConfig(_Strict):
    """A cheap second fidelity used as a control variate (see :mod:`contribshap.pipeline.core.estimators.multifidelity`).

    The design's coalitions (``design.budget``) are evaluated at both fidelities; ``budget`` further
    coalitions, drawn from the same design with a seed stream of their own, at the low one only. The
    reducer combines them with the estimated optimal coefficient.

    Attributes:
        game: overrides deep-merged into ``game`` to make the cheap game, e.g. ``{finetune: {steps: 10},
            sampling: {n_images: 100}}`` (python games: ``{options: {...}}``). Its evaluations live in a
            store namespace of their own (``<config_hash>-<variant>``).
        budget: coalitions of the low-fidelity-only design, counting the empty and the full one like
            ``design.budget`` (the endpoints are the low twins of the design's).
        replicates: evaluations per low-only coalition (default: ``replicates.coalition``).
    """

    game: dict[str, Any]
    budget: int = Field(ge=3)
    replicates: int | None = Field(default=None, ge=1)

    @field_validator("game")
    @classmethod
    def _not_empty(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("got {}; give the keys of game that make it cheap, e.g. {finetune: {steps: 10}}")
        if "kind" in value:
            raise ValueError("the cheap game keeps the game's kind; remove kind")
        return value


class Config(_Strict):
    """A whole run. See the module docstring for the YAML layout."""

    name: str = "contribshap-run"
    store: str = "runs/contribshap-run"
    seed: int = Field(default=0, ge=0)
    game: GameConfig
    design: DesignConfig
    replicates: ReplicatesConfig = Field(default_factory=ReplicatesConfig)
    estimators: list[str] = Field(default_factory=lambda: ["kernelshap"], min_length=1)
    level: float = Field(default=0.95, gt=0, lt=1)
    stopping: StoppingConfig = Field(default_factory=StoppingConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    low_fidelity: LowFidelityConfig | None = None
    directions: dict[str, Literal["higher", "lower"]] = Field(default_factory=dict)

    @field_validator("estimators")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in KNOWN_METHODS]
        if unknown:
            raise ValueError(f"unknown method {unknown[0]!r}; valid methods: {', '.join(KNOWN_METHODS)}")
        return value

    # --- derived values -------------------------------------------------------------------------------
    def direction(self, prop: str) -> str:
        """Which way ``prop`` is better, ``"lower"`` or ``"higher"``: the config's ``directions``, else the
        built-in one (:data:`~contribshap.pipeline.config.diffusion.PROPERTY_DIRECTIONS`), else higher."""
        return self.directions.get(prop) or PROPERTY_DIRECTIONS.get(prop, "higher")

    def n_players(self) -> int | None:
        """Number of contributors when the config alone tells it (python games), else None."""
        return _n_players(self.game)

    def plan_seed(self) -> int:
        """Seed of the coalition design: ``design.seed`` if given, else ``seed``."""
        return self.seed if self.design.seed is None else self.design.seed

    def derive(self, overrides: dict[str, Any]) -> Config:
        """The config of a derived game: this one with ``overrides`` deep-merged (a derived game has no
        second fidelity of its own).

        Raises:
            pydantic.ValidationError: the merged config does not validate (it names the key).
        """
        merged = deep_merge(self.model_dump(mode="json"), overrides)
        merged["low_fidelity"] = None
        return Config.model_validate(merged)

    def derived_namespace(self, overrides: dict[str, Any]) -> str:
        """Store namespace of a derived game's evaluations: ``<config_hash>-<variant>``."""
        return f"{config_hash(self)}-{variant_hash(overrides)}"

    def low_fidelity_overrides(self) -> dict[str, Any] | None:
        """The overrides that derive the cheap game (``{"game": low_fidelity.game}``), None without one."""
        return None if self.low_fidelity is None else {"game": self.low_fidelity.game}

    def low_fidelity_config(self) -> Config | None:
        """The cheap game's whole config (:meth:`derive` with ``low_fidelity.game``), None without one."""
        overrides = self.low_fidelity_overrides()
        return None if overrides is None else self.derive(overrides)

    def low_fidelity_namespace(self) -> str | None:
        """Store namespace of the cheap game's evaluations (:meth:`derived_namespace`), None without one."""
        overrides = self.low_fidelity_overrides()
        return None if overrides is None else self.derived_namespace(overrides)


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``overrides`` merged in, key by key (nested mappings merged, others replaced)."""
    import copy

    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _n_players(game: Any) -> int | None:
    for attr in ("n_players", "n_contributors"):
        value = getattr(game, attr, None)
        if callable(value):
            value = value()
        if isinstance(value, int):
            return value
    return None


# --- hashing -------------------------------------------------------------------------------------------
def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_hash(cfg: Config) -> str:
    """16 hex chars over ``game``, ``seed`` and ``replicates`` (what changes a coalition's value)."""
    return _digest(
        {
            "game": cfg.game.model_dump(mode="json"),
            "seed": cfg.seed,
            "replicates": cfg.replicates.model_dump(mode="json"),
        }
    )


def plan_hash(cfg: Config) -> str:
    """16 hex chars over the design kind, effective plan seed and options (not the budget)."""
    return _digest({"kind": cfg.design.kind, "seed": cfg.plan_seed(), "options": cfg.design.options})


def variant_hash(overrides: dict[str, Any]) -> str:
    """8 hex chars naming a derived game (``<config_hash>-<variant>``) built with ``overrides``."""
    return _digest(overrides)[:8]


# --- loading ----------------------------------------------------------------------------------------------
def _loc(loc: tuple[Any, ...]) -> str:
    """pydantic error location -> dotted key path (drops the union tag pydantic inserts)."""
    parts = [str(p) for p in loc if p not in ("python", "diffusion")]
    return ".".join(parts) if parts else "<top>"


def _pydantic_problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        key = _loc(item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            problems.append(f"{key}: unknown key; remove it or check its spelling")
        elif kind == "missing":
            problems.append(f"{key}: required key is missing; add it")
        elif kind == "union_tag_invalid":
            tag = item["ctx"].get("tag") if item.get("ctx") else None
            problems.append(f"{key}.kind: unknown game kind {tag!r}; valid kinds: python, diffusion")
        elif kind == "union_tag_not_found":
            problems.append(f"{key}.kind: required key is missing; valid kinds: python, diffusion")
        else:
            message = item["msg"].removeprefix("Value error, ")
            plain = "got " in message or isinstance(item.get("input"), dict)
            got = "" if plain else f" (got {item.get('input')!r})"
            problems.append(f"{key}: {message}{got}")
    return problems


def _semantic_problems(cfg: Config, *, check_paths: bool, check_store: bool = False) -> list[str]:
    """Checks that need several keys at once (budget vs n, stopping vs estimators, local paths, store)."""
    problems: list[str] = []
    n = cfg.n_players()
    design = cfg.design
    # 1. budget against the number of players
    if n is not None:
        if design.kind == "exact" and n > EXACT_MAX_PLAYERS:
            problems.append(
                f"design.kind: exact needs 2^{n} coalitions; use n_players <= {EXACT_MAX_PLAYERS} "
                "or a sampling design such as leverage"
            )
        if design.kind not in ("exact", "loo"):
            if design.budget is None:
                problems.append(f"design.budget: required for design {design.kind!r}; set it to >= {n + 2}")
            elif design.budget < n + 2:
                problems.append(
                    f"design.budget: {design.budget} is below n+2 = {n + 2} (n = {n} players plus the "
                    f"empty and full coalitions); use budget >= {n + 2}"
                )
        names = getattr(cfg.game, "names", None)
        if names is not None and len(names) != n:
            problems.append(f"game.names: {len(names)} names for n_players = {n}; give exactly {n}")
        if design.kind not in ("exact", "loo") and n >= 2:
            from contribshap.pipeline.core.designs import sample_coalitions

            try:
                sample_coalitions(n, 0, design.kind, seed=cfg.plan_seed(), **design.options)
            except (ValueError, TypeError) as error:
                problems.append(f"design.options: {str(error).rstrip('.')}")
    # 2. stopping refers to configured methods
    if cfg.stopping.method is not None and cfg.stopping.method not in cfg.estimators:
        problems.append(
            f"stopping.method: {cfg.stopping.method!r} is not in estimators {cfg.estimators}; "
            "use one of them"
        )
    if cfg.stopping.max_rounds > 1 and cfg.stopping.ci_abs is None and cfg.stopping.ci_rel is None:
        problems.append("stopping.max_rounds: > 1 needs a CI target; set stopping.ci_abs or stopping.ci_rel")
    if "exact_shapley" in cfg.estimators and design.kind != "exact":
        problems.append(
            f"estimators: exact_shapley needs design.kind: exact (got {design.kind!r}); "
            "remove it or use the exact design"
        )
    # 3. the cheap game of a two-fidelity plan
    if cfg.low_fidelity is not None:
        problems.extend(_low_fidelity_problems(cfg))
    # 4. local paths: the python target module, and every path the diffusion schema names
    if check_paths:
        problems.extend(_path_problems(cfg))
    # 5. the store folder: creatable and writable
    if check_store:
        problem = store_location_problem(resolve_store(cfg))
        if problem:
            problems.append(f"store: {problem}")
    return problems


#: Methods the two-fidelity reducer cannot combine (they need per-row options of the single design).
_SINGLE_FIDELITY_METHODS = ("kernelshap_paper", "exact_shapley")


def _low_fidelity_problems(cfg: Config) -> list[str]:
    low = cfg.low_fidelity
    assert low is not None
    problems = []
    if cfg.design.kind in ("exact", "loo"):
        problems.append(f"low_fidelity: needs a sampling design (got design.kind {cfg.design.kind!r}); "
                        "use paired or leverage, or remove low_fidelity")
    n = cfg.n_players()
    if n is not None and low.budget < n + 2:
        problems.append(f"low_fidelity.budget: {low.budget} is below n+2 = {n + 2}; use budget >= {n + 2}")
    single = [m for m in cfg.estimators if m in _SINGLE_FIDELITY_METHODS]
    if single:
        problems.append(f"estimators: {single[0]} cannot combine two fidelities; remove it or low_fidelity")
    try:
        cheap = cfg.low_fidelity_config()
    except ValidationError as error:
        first = _pydantic_problems(error)[0]
        problems.append(f"low_fidelity.game: the cheap game is not valid ({first}); fix the override")
        return problems
    if cheap is not None and cheap.game == cfg.game:
        problems.append("low_fidelity.game: changes nothing of game; override what makes it cheap, "
                        "e.g. {finetune: {steps: 10}}")
    return problems


def store_location_problem(path: Path) -> str | None:
    """Why the store folder ``path`` cannot be created or written (None when it can); nothing is written.

    Args:
        path: the absolute store folder.

    Returns:
        one clause with the fix, e.g. ``"/x/st cannot be created: /x is a file, not a folder; set store to a
        path outside it"``, or None.
    """
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder; set store to a folder path"
    folder = path
    while not folder.exists():  # the nearest existing folder decides (mkdir -p creates the rest)
        folder = folder.parent
    if not folder.is_dir():
        return f"{path} cannot be created: {folder} is a file, not a folder; set store to a path outside it"
    if not os.access(folder, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        why = "read-only file system" if read_only else "permission denied"
        return f"{folder} is not writable ({why}); set store to a writable folder"
    return None


def _path_problems(cfg: Config) -> list[str]:
    problems = []
    if isinstance(cfg.game, PythonGameConfig):
        module = cfg.game.target.partition(":")[0]
        top = module.split(".")[0]
        sys.path.insert(0, os.getcwd())
        try:
            found = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            found = False
        finally:
            sys.path.remove(os.getcwd())
        if not found:
            problems.append(
                f"game.target: module {module!r} not found in the working directory {os.getcwd()} "
                "or on PYTHONPATH; run from its folder or add it to PYTHONPATH"
            )
    missing_paths = getattr(cfg.game, "missing_paths", None)
    if callable(missing_paths):
        for line in missing_paths():
            key, _, path = str(line).partition(": ")
            problems.append(f"game.{key}: path {path} does not exist; fix the path or create the file")
    return problems


def parse_config(raw: Any, *, source: str = "<config>", check_paths: bool = True, check_store: bool = False) -> Config:
    """Validate a mapping (already-parsed YAML); raises :class:`ConfigError` listing every problem.

    Args:
        raw: the parsed YAML.
        source: the file name the error line starts with.
        check_paths: also check local paths (see :func:`load_config`).
        check_store: also check that the store folder can be created and written.
    """
    if raw is None:
        raise ConfigError(f"{source}: the file is empty; write the config's keys (at least game and design)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the file must be a YAML mapping of keys (got {type(raw).__name__})")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as error:
        problems = _pydantic_problems(error)
        raise ConfigError(f"{source}: " + " | ".join(problems)) from None
    problems = _semantic_problems(cfg, check_paths=check_paths, check_store=check_store)
    if problems:
        raise ConfigError(f"{source}: " + " | ".join(problems))
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that records every mapping key given twice (``self.duplicates``: (line, problem))."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str | int | float | bool) and key in seen:
                self.duplicates.append((line, f"{key}: key given twice (lines {seen[key]} and {line}); keep one"))
            elif isinstance(key, str | int | float | bool):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file, refusing what PyYAML would take silently (keys given twice, non-UTF-8 bytes).

    Raises:
        ConfigError: one line naming the file, the problem and the fix (every duplicate key at once).
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not a text file (byte {error.start} is not UTF-8); pass a YAML config saved as UTF-8"
        ) from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror}); check the path and its permissions") from None
    loader = _UniqueKeyLoader(text)
    try:
        raw = loader.get_single_data()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax") from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(f"{path}: " + " | ".join(problem for _, problem in sorted(loader.duplicates)))
    return raw


def load_config(path: str | Path, *, check_paths: bool = True, check_store: bool = False) -> Config:
    """Read and validate a YAML config.

    Args:
        path: the YAML file (UTF-8; a key given twice is an error).
        check_paths: also check that local paths exist (the python target module, data/weights paths).
        check_store: also check that the store folder can be created and written (nothing is written).

    Raises:
        ConfigError: one line: ``<file>: <key>: <problem>; <fix> | <key>: ...`` (every problem at once).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; pass the path of a YAML config")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML config")
    raw = read_yaml(path)
    return parse_config(raw, source=str(path), check_paths=check_paths, check_store=check_store)


def resolve_store(cfg: Config, override: str | Path | None = None) -> Path:
    """Absolute store folder (relative paths resolve from the working directory)."""
    return Path(override if override is not None else cfg.store).expanduser().resolve()


def save_resolved(cfg: Config, path: Path) -> None:
    """Write the resolved config (all defaults filled in) as YAML, atomically."""
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)  # a full disk must not leave a partial temporary file behind
        if isinstance(error, OSError) and error.filename is None:
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
