"""Storage: the store folder (manifest, evaluation rows), the coalition plan and read-only views of both.

May import: contracts, core, config, pyarrow.
"""
