"""The Ray layer: connection, the dispatch loop, the task bodies run on workers, and Ray Jobs submission.

May import: contracts, core, config, storage, games; Ray only lazily, inside functions.
"""
