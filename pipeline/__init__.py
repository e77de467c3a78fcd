"""contribshap driver side: config, plan, store, driver, estimators, evaluation, CLI.

Nothing in this package imports torch at import time; the numpy core (``sampling``, ``estimators``,
``evaluate``) imports neither torch nor ray.
"""

__version__ = "0.1.0"
