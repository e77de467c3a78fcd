"""What users run: ``run``, ``reduce``, ``evaluate``, ``report``, ``status``, ``repair`` and the command line.

May import: every layer below (contracts, core, config, storage, games, dispatch). Nothing imports it.
"""
