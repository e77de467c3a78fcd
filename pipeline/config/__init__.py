"""The config schema: validated once, up front, every problem reported at once; hashes of configs.

May import: contracts, core (names of methods and designs), the use cases' schemas, pydantic and yaml.
"""
