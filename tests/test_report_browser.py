"""The report of a tiny diffusion store, rendered by headless Chromium: every image loads, the page has its
tables, the contributor cards and the sample grids, and a screenshot is not blank.

The store is made in-process the way ``contribshap run`` makes it (prepare, every coalition of an exact
design through the diffusion game, rows built by ``make_row``, the real reducer), without Ray. The
"without the top contributors" grid is made by the worker function the demo runs as a Ray task. Skipped,
with a note, when no Chromium binary is installed (``apt-get install chromium``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
TINY_GAME = {
    "kind": "diffusion",
    "data": {"source": "digits", "classes": [0, 1, 7], "planted": [{"kind": "noise", "name": "noise", "n_images": 40}]},
    "model": {"block_out_channels": [8, 16]},
    "train": {"steps": 6, "batch_size": 16},
    "recover": {"steps": 2, "batch_size": 16},
    "finetune": {"steps": 2, "batch_size": 16},
    "sampling": {"steps": 2, "n_images": 24, "batch_size": 24},
    "properties": ["fid", "quality"],
    "feature_extractor": {"steps": 10, "feature_dim": 8},
    "device": "cpu",
}
#: Appended to a copy of the page: lists every image with its decoded width once the page has loaded.
CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "imgcheck";
  out.textContent = JSON.stringify(Array.from(document.images).map(i => [i.getAttribute("src"), i.complete, i.naturalWidth]));
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    """Path of a Chromium (or Chrome) binary, or None."""
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def build_diffusion_store(root: Path) -> Path:
    """A prepared, fully evaluated and reduced store of the tiny digits game (4 contributors, exact design)."""
    from contribshap.pipeline.config.schema import config_hash, parse_config, plan_hash, save_resolved
    from contribshap.pipeline.contracts.keys import mask_from_str
    from contribshap.pipeline.games.factory import build_game
    from contribshap.pipeline.products.reduce import reduce_store
    from contribshap.pipeline.storage import plan as plan_mod
    from contribshap.pipeline.storage.store import Store, make_row

    cfg = parse_config({"name": "browser-check", "store": str(root), "seed": 0, "game": TINY_GAME,
                        "design": {"kind": "exact"}, "estimators": ["kernelshap"]}, check_paths=False)
    store = Store(root)
    namespace = config_hash(cfg)
    store.create(name=cfg.name, config_hash=namespace, plan_hash=plan_hash(cfg))
    save_resolved(cfg, store.config_path)
    game = build_game(cfg, root)
    summary = game.prepare()
    contributors = [c.to_dict() for c in game.contributors()]
    ids = [c["id"] for c in contributors]
    store.update_manifest(contributors=contributors, property_names=list(game.property_names()),
                          prepared={namespace: {"summary": summary, "worker": "test:0", "at": time.time()}})
    request = plan_mod.PlanRequest("exact", len(ids), None, 0, {}, 1, 1)
    rows, _ = plan_mod.extend_plan([], ids, request, round_index=0)
    plan_mod.write_plan(store, rows)
    for job in plan_mod.jobs_for(rows, seed=cfg.seed):
        result = game.evaluate(mask_from_str(job.mask), replicate=job.replicate, seed=job.seed)
        store.write_eval(namespace, make_row(job.to_dict(), status="ok", attempt=1, values=result.values,
                                             timings=result.timings, info=result.info))
    reduce_store(root, cfg=cfg, write=True)
    return root


@pytest.fixture(scope="module")
def diffusion_report(tmp_path_factory):
    """(store, index.html) of the tiny diffusion store, with the demo's "without the top contributors" grid."""
    import torch
    from contribshap.pipeline.config.schema import load_config
    from contribshap.pipeline.products.report import (
        SAMPLES_WITHOUT_JSON,
        SAMPLES_WITHOUT_PNG,
        build_report,
        sample_panels,
    )
    from contribshap.workers.model_baselines import counterfactual_samples

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and several lose badly on a busy machine
    try:
        root = build_diffusion_store(tmp_path_factory.mktemp("diffusion") / "store")
        panels, doc = sample_panels(root)
        counterfactual_samples(load_config(root / "config.yaml", check_paths=False), root, panels,
                               root / SAMPLES_WITHOUT_PNG, n_show=16)  # what `contribshap demo` runs as a Ray task
    finally:
        torch.set_num_threads(threads)
    (root / SAMPLES_WITHOUT_JSON).write_text(json.dumps(doc))
    return root, build_report(root)


def test_the_diffusion_report_has_cards_grids_and_only_local_images(diffusion_report):
    root, index = diffusion_report
    page = index.read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    # 1. contributor cards with their own images (4 contributors, the planted one flagged), v(N) / v(∅) grids,
    #    the grid without the top contributors, and the "not identified" marker where it applies
    assert sum(s.startswith("thumb_") for s in sources) == 4
    assert {"samples_full.png", "samples_null.png", "samples_without.png"} <= set(sources)
    assert page.count('<div class="card">') == 3 and page.count('<div class="card flag">') == 1
    assert "flagged: planted" in page
    assert "How to read this" in page and "not identified" in page
    # 2. every image is a PNG file next to the page: no URL, no script, nothing outside the folder
    for src in sources:
        assert "/" not in src and (index.parent / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    assert "<script" not in page and "http" not in page
    # 3. the sample panels: the full coalition, without the top k, without the planted contributor
    doc = json.loads((root / "artifacts/samples/without-top.json").read_text())
    assert doc["masks"][0] == "1111" and doc["flagged"] == ["planted-noise"] and len(doc["masks"]) >= 2


def test_chromium_loads_every_image_and_renders_a_non_blank_page(diffusion_report, tmp_path):
    binary = chromium()
    if binary is None:
        pytest.skip("no chromium binary found (install it with `apt-get install chromium`); the report was "
                    "checked without a browser only")
    _, index = diffusion_report
    check = index.parent / "browser-check.html"
    check.write_text(index.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    flags = [binary, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    try:
        # 1. the DOM after load: every <img> decoded (complete, naturalWidth > 0)
        dom = subprocess.run([*flags, "--dump-dom", check.as_uri()], capture_output=True, text=True, timeout=60)
        assert dom.returncode == 0, dom.stderr[-2000:]
        found = re.search(r'<pre id="imgcheck">(.*?)</pre>', dom.stdout, re.S)
        assert found, f"the check script did not run: {dom.stdout[-500:]}"
        images = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
        broken = [src for src, complete, width in images if not complete or width == 0]
        assert images and broken == [], f"broken images: {broken}"
        assert {"samples_full.png", "samples_null.png", "samples_without.png"} <= {src for src, _, _ in images}
        assert "<table>" in dom.stdout and 'class="cards"' in dom.stdout
        # 2. a screenshot of the top of the page is not blank (cards with their images are there)
        shot = tmp_path / "report.png"
        done = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,1600", index.as_uri()],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    finally:
        check.unlink(missing_ok=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1600, 1280) and pixels.std() > 20 and (pixels < 60).mean() > 0.01
