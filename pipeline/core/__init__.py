"""The numpy core: coalition designs, Shapley estimators, evaluation metrics and store-free baselines.

May import: contracts, numpy and scipy (scikit-learn for optional surrogates). No I/O, no torch, no Ray.
"""
