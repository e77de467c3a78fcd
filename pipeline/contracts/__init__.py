"""Contracts shared by the driver and the workers: errors, atomic writes, keys and seeds, progress, game types.

May import: the standard library, numpy and pyarrow. Never torch, Ray, pydantic or any other contribshap module.
"""
