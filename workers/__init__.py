"""contribshap worker side: the only torch code (data, models, pruning, fine-tuning, sampling, properties)."""
