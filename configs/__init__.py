"""The shipped configs, installed with the package (``contribshap.configs``) so that an installed wheel runs
``contribshap demo`` from any folder: the demo, the three published settings, scenarios and examples (YAML)."""
