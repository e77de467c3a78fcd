"""The game factory: a config -> a game (python callables here; diffusion games from the workers, lazily).

May import: contracts, config; ``contribshap.workers`` only lazily, inside the factory.
"""
