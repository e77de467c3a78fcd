"""contribshap, driver side. Its sub-packages read as the data flow, each importing only those above it:

contracts -> core -> config -> storage -> games -> dispatch -> products

- ``contracts``: errors, atomic writes, keys and seeds, progress, game types (shared with the workers);
- ``core``: the numpy core (designs, estimators, metrics);
- ``config``: the validated config schema; ``storage``: the store, the plan, read-only views;
- ``games``: the game factory; ``dispatch``: Ray; ``products``: run, reduce, evaluate, report, status, CLI.

Nothing in this package imports torch at import time.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("contribshap")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0+unknown"
