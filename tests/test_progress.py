"""Progress of a task reaches the driver's one live bar, and nothing else reaches the console.

- the driver's bar names the stage the task reports now (a new stage is drawn under its own name at once);
- inside a task whose driver shows no progress (``--quiet``, ``--no-progress``) worker code draws no bar
  of its own (Ray would forward it to the driver's console line by line);
- the TRAK gradients of ``contribshap evaluate`` report their steps to the driver's bar, not a tqdm bar.
"""

from __future__ import annotations

import io
import json

import numpy as np
from contribshap.pipeline.contracts.progress import collect_progress, read_progress, report_progress
from contribshap.pipeline.dispatch.driver import _StageBar


def _frames(text: str) -> list[str]:
    """The bar's successive drawings (tqdm starts each with a carriage return)."""
    return [frame.strip() for frame in text.split("\r") if frame.strip()]


def test_a_new_stage_is_drawn_under_its_own_name():
    out = io.StringIO()
    bar = _StageBar("prepare: starting a worker", file=out, interval=0.0)
    bar.show({"stage": "prepare: models", "done": 0, "total": 0})
    bar.show({"stage": "prepare 1/6 train θ*", "done": 1200, "total": 1200})
    bar.show({"stage": "prepare 3/6 recover", "done": 0, "total": 600})
    recover = len(_frames(out.getvalue()))
    bar.show(None)  # nothing new: the elapsed time is redrawn, under the same name
    frames = _frames(out.getvalue())
    bar.close()
    assert frames[0].startswith("prepare: starting a worker [")
    assert any(f.startswith("prepare 1/6 train θ*: 100%") and "1200/1200" in f for f in frames)
    assert not [f for f in frames if "train θ*" in f and "/600" in f], frames  # never the old name on the new steps
    assert frames[recover - 1].startswith("prepare 3/6 recover:   0%") and "0/600" in frames[recover - 1]
    assert len(frames) > recover and frames[-1].startswith("prepare 3/6 recover:   0%")


def test_a_task_without_a_progress_file_shows_nothing(tmp_path):
    assert report_progress("outside a task", 1, 2) is False  # by hand: the caller draws its own bar
    with collect_progress(None):
        assert report_progress("prepare 3/6 recover", 0, 600) is True  # handled: no local bar
    path = tmp_path / "progress.json"
    with collect_progress(path):
        assert report_progress("prepare 3/6 recover", 5, 600) is True
    assert read_progress(path)["stage"] == "prepare 3/6 recover" and read_progress(path)["done"] == 5
    assert report_progress("after the task", 1, 2) is False


def test_trak_gradients_report_their_steps_and_draw_no_bar(tmp_path, capsys, request):
    import torch
    from contribshap.pipeline.config.diffusion import DiffusionGameConfig
    from contribshap.workers.model_baselines import projected_gradients
    from contribshap.workers.models import build_model, build_scheduler
    from sklearn.datasets import load_digits

    config = DiffusionGameConfig.model_validate(
        {"kind": "diffusion", "data": {"source": "digits"}, "model": {"block_out_channels": [8, 16]}, "device": "cpu"}
    )
    model, scheduler = build_model(config.model, seed=0), build_scheduler(config.model)
    images = torch.tensor(load_digits().images[:6] / 8.0 - 1.0, dtype=torch.float32).unsqueeze(1)
    path = tmp_path / "progress.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is ~40x faster on a busy 2-core machine
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    with collect_progress(path):
        phi = projected_gradients(model, scheduler, images, dim=8, n_timesteps=2, seed=0,
                                  progress="TRAK train gradients")
    assert phi.shape == (6, 8) and np.isfinite(phi).all()
    assert {k: v for k, v in json.loads(path.read_text()).items() if k != "at"} == {
        "stage": "TRAK train gradients", "done": 6, "total": 6}
    captured = capsys.readouterr()
    assert "TRAK" not in captured.err + captured.out
    with collect_progress(None):  # the driver shows no progress: neither does the worker
        projected_gradients(model, scheduler, images, dim=8, n_timesteps=2, seed=0, progress="TRAK train gradients")
    captured = capsys.readouterr()
    assert "TRAK" not in captured.err + captured.out
    projected_gradients(model, scheduler, images, dim=8, n_timesteps=2, seed=0, progress="TRAK train gradients")
    assert "TRAK train gradients" in capsys.readouterr().err  # by hand: its own bar
