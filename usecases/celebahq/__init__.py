"""CelebA-HQ (the paper's diversity setting): face identities as contributors, latent diffusion on the VQ
latents of a local VQ-VAE (``model.kind: ldm``), diversity of BLIP/CLIP embedding clusters.

Config: ``configs/celebahq.yaml``; docs: ``docs/usecases.md``.
"""

from contribshap.usecases import UseCase
from contribshap.usecases.celebahq.schema import CelebAHQSource, LDMModelConfig

USECASE = UseCase(
    name="celebahq",
    summary="CelebA-HQ: 50 identities, latent diffusion (VQ-VAE), embedding-cluster diversity",
    data=(CelebAHQSource,),
    models=(LDMModelConfig,),
    components={
        "sources": {"celebahq": "contribshap.usecases.celebahq.source:load_celebahq"},
        "indexes": {"celebahq": "contribshap.usecases.celebahq.source:celebahq_index"},
        "models": {"ldm": "contribshap.usecases.celebahq.backend:LDM_MODEL"},
        "backends": {"ldm": "contribshap.usecases.celebahq.backend:LDMBackend"},
    },
)
