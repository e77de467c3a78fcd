"""ArtBench Post-Impressionism (the paper's aesthetic setting): 258 artists as contributors, Stable Diffusion
1.x fine-tuned with LoRA (``model.kind: sd_lora``), the LAION aesthetic score (``laion_aesthetic``).

Config: ``configs/artbench.yaml``; docs: ``docs/usecases.md``.
"""

from contribshap.usecases import UseCase
from contribshap.usecases.artbench.schema import (
    ARTBENCH_PROPERTIES,
    AestheticExtractor,
    ArtBenchSource,
    SDLoraModelConfig,
    check,
)

USECASE = UseCase(
    name="artbench",
    summary="ArtBench Post-Impressionism: 258 artists, Stable Diffusion + LoRA, LAION aesthetic score",
    data=(ArtBenchSource,),
    models=(SDLoraModelConfig,),
    extractors=(AestheticExtractor,),
    properties=ARTBENCH_PROPERTIES,
    components={
        "sources": {"artbench": "contribshap.usecases.artbench.source:load_artbench"},
        "indexes": {"artbench": "contribshap.usecases.artbench.source:artbench_index"},
        "models": {"sd_lora": "contribshap.usecases.artbench.backend:SD_LORA_MODEL"},
        "backends": {"sd_lora": "contribshap.usecases.artbench.backend:SDLoraBackend"},
        "extractors": {"laion_aesthetic": "contribshap.usecases.artbench.properties:LAION_AESTHETIC"},
        "properties": {"aesthetic_mean": "contribshap.usecases.artbench.properties:aesthetic_mean",
                       "aesthetic_p90": "contribshap.usecases.artbench.properties:aesthetic_p90"},
    },
    check=check,
)
