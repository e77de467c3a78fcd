"""``game.kind: python``: wrap a plain function ``module:function`` as a :class:`contribshap.pipeline.games.factory.Game`.

The function takes a bool mask of shape (n_players,) and returns ``{property: float}`` (a bare number is
property ``value``). It may also accept ``replicate`` and/or ``seed`` keyword arguments (passed when its
signature names them), and receives ``game.options`` as further keyword arguments.

Example (``my_games.py`` in the working directory)::

    def airport(mask):
        costs = [1, 1, 2, 2, 3, 3]
        return {"cost": max((c for c, m in zip(costs, mask) if m), default=0.0)}
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from contribshap.pipeline.config.schema import Config, PythonGameConfig
from contribshap.pipeline.contracts.errors import ContribshapError
from contribshap.pipeline.contracts.game import Contributor, EvalResult

__all__ = ["GameError", "PythonGame", "import_target", "option_problems", "signature_problem"]


class GameError(ContribshapError):
    """A game could not be built or returned something unusable (the message names the target)."""


def _import_module(module_name: str, search_paths: Sequence[str]) -> Any:
    """Import ``module_name`` with ``search_paths`` first on sys.path.

    A module of the same name already imported from another file (another test folder on a reused
    worker process) is loaded again from the file the search path finds now.
    """
    for path in reversed([os.path.abspath(p) for p in search_paths]):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(module_name)
    if spec is None:
        raise ModuleNotFoundError(module_name)
    loaded = sys.modules.get(module_name)
    if loaded is not None and getattr(loaded, "__file__", None) == spec.origin:
        return loaded
    if loaded is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(module_name)


def import_target(target: str, search_paths: Sequence[str] = ()) -> Callable[..., Any]:
    """Resolve ``"module:function"`` (module searched in ``search_paths``, the cwd, then sys.path).

    Raises:
        GameError: module missing, module failing to import, or function missing / not callable.
    """
    module_name, _, function_name = target.partition(":")
    paths = [*search_paths, os.getcwd()]
    try:
        module = _import_module(module_name, paths)
    except ModuleNotFoundError as error:
        if error.name not in (module_name, module_name.split(".")[0]):
            raise GameError(f"game.target {target!r}: importing {module_name!r} failed: {error}") from None
        raise GameError(
            f"game.target {target!r}: module {module_name!r} not found (searched {os.getcwd()} and "
            "PYTHONPATH); run from its folder or add it to PYTHONPATH"
        ) from None
    except Exception as error:
        raise GameError(
            f"game.target {target!r}: importing {module_name!r} failed: {type(error).__name__}: {error}"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        public = sorted(
            n for n, v in vars(module).items()
            if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
        )
        raise GameError(
            f"game.target {target!r}: {module_name!r} has no function {function_name!r}; "
            f"callables there: {', '.join(public) or 'none'}"
        )
    return function


#: Keyword arguments the python game passes itself when the function's signature names them.
_PASSED_BY_THE_GAME = ("replicate", "seed")


def signature_problem(function: Callable[..., Any], options: dict[str, Any]) -> str | None:
    """Why ``function(mask, **options)`` (plus ``replicate`` / ``seed`` when it names them, as
    :meth:`PythonGame.evaluate` calls it) cannot be called; None when it can. Nothing is called."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: the call will tell
        return None
    extra = {name: 0 for name in _PASSED_BY_THE_GAME if name in signature.parameters}
    try:
        signature.bind(None, **{**options, **extra})
    except TypeError as error:
        takes = [name for name, p in list(signature.parameters.items())[1:]
                 if name not in _PASSED_BY_THE_GAME and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return f"{error} (it takes: {', '.join(takes) or 'no options'})"
    return None


def option_problems(cfg: Config, search_paths: Sequence[str] = ()) -> list[str]:
    """``game.options`` of a python game, and those of its cheap game (``low_fidelity.game.options``),
    checked against the function's signature: one clause per mismatch naming the key and the fix.

    The function's module is imported (search paths first, then the working directory); a module that
    cannot be imported here is not judged (the run's prepare reports it).

    Raises:
        GameError: the module cannot be imported or has no such function (callers that only want the
            signature check catch it).
    """
    games = [("game", cfg.game)]
    cheap = cfg.low_fidelity_config() if cfg.low_fidelity is not None else None
    if cheap is not None:
        games.append(("low_fidelity.game", cheap.game))
    problems = []
    functions: dict[str, Callable[..., Any]] = {}
    for key, game in games:
        if not isinstance(game, PythonGameConfig):
            continue
        if game.target not in functions:
            functions[game.target] = import_target(game.target, search_paths)
        problem = signature_problem(functions[game.target], game.options)
        if problem is not None:
            problems.append(f"{key}.options: {game.target} cannot be called with them: {problem}; "
                            f"fix {key}.options or the function's parameters")
    return problems


class PythonGame:
    """A :class:`contribshap.pipeline.games.factory.Game` around ``game.target``.

    Args:
        config: the ``game`` section (``PythonGameConfig``).
        search_paths: folders tried first when importing the module (the driver passes its cwd).
    """

    kind = "python"

    def __init__(self, config: PythonGameConfig, *, search_paths: Sequence[str] = ()) -> None:
        self.config = config
        self.function = import_target(config.target, search_paths)
        parameters = inspect.signature(self.function).parameters
        self._takes = {name for name in ("replicate", "seed") if name in parameters}
        self._property_names: list[str] = []

    def contributors(self) -> list[Contributor]:
        """Players ``p0..p{n-1}`` (names from ``game.names`` when given)."""
        names = self.config.names or [f"p{i}" for i in range(self.config.n_players)]
        return [Contributor(id=f"p{i}", name=name) for i, name in enumerate(names)]

    def property_names(self) -> list[str]:
        """Property names seen so far (python games learn them from the first evaluation)."""
        return list(self._property_names)

    def prepare(self) -> dict[str, Any]:
        """Nothing to build; returns the target and n."""
        return {"target": self.config.target, "n_players": self.config.n_players}

    def evaluate(self, mask: np.ndarray, *, replicate: int = 0, seed: int = 0) -> EvalResult:
        """Call the function on ``mask`` (bool, shape (n_players,)) and check what it returns."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.config.n_players,):
            raise GameError(f"mask shape {mask.shape} does not match n_players = {self.config.n_players}")
        extra = {"replicate": replicate, "seed": seed}
        kwargs = {**self.config.options, **{k: extra[k] for k in self._takes}}
        result = self.function(mask.copy(), **kwargs)
        values = _check_values(result, self.config.target)
        if not self._property_names:
            self._property_names = list(values)
        return EvalResult(values=values)


def _check_values(result: Any, target: str) -> dict[str, float]:
    """A returned dict/number -> ``{name: float}``; anything else (or a non-finite value) -> GameError."""
    if isinstance(result, int | float | np.number) and not isinstance(result, bool):
        result = {"value": result}
    if not isinstance(result, dict) or not result:
        raise GameError(
            f"game.target {target!r} returned {type(result).__name__}; return a non-empty dict "
            "{property: float} or a number"
        )
    values = {}
    for name, value in result.items():
        if not isinstance(name, str) or not name:
            raise GameError(f"game.target {target!r} returned property name {name!r}; use non-empty strings")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise GameError(
                f"game.target {target!r} returned {name}={value!r}; property values must be numbers"
            ) from None
        if not math.isfinite(number):
            raise GameError(f"game.target {target!r} returned {name}={number}; property values must be finite")
        values[name] = number
    return values
