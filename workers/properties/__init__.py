"""Properties of generated images: a registry of functions on features and class probabilities.

One evaluation runs the feature extractor once on the generated images and hands every property the same
:class:`GeneratedFeatures` and the cached :class:`Reference` statistics of the real images. A property is a function::

    def my_property(generated: GeneratedFeatures, reference: Reference) -> float: ...

registered by name in :data:`contribshap.workers.registry.PROPERTIES` (the built-ins, and those a use case
declares), or any ``"module:function"`` with that signature named in ``properties:`` (imported on first use).
Types and lookup: :mod:`.base`; feature extractors: :mod:`.extractors`; embeddings: :mod:`.embeddings`.

Built-ins (``contribshap.workers.properties.metrics``): ``fid``, ``fid_inf`` (FID extrapolated to infinitely
many images), ``log_fid``, ``kid``, ``inception_score``, ``diversity``, ``quality``. Which direction is
better: lower for fid/fid_inf/log_fid/kid, higher for the others.
"""
