"""Which runs a resumed evaluation does again (no Ray needed: the job list and the run records)."""

from __future__ import annotations

import json
import logging

from hgprompt_ray.transfer.evaluation import RESULT_SCHEMA, EvaluationJob
from hgprompt_ray.transfer.runner import unfinished


def _write(root, job, schema, closed_form):
    path = root / "runs" / f"{job.key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema_version": schema, "closed_form": closed_form, "test_accuracy": 0.5}))


def test_trained_runs_with_the_cumulative_head_statistics_run_again(tmp_path, caplog):
    sources = ("a", "b")
    vpt, probe, bias, average, missing = (
        EvaluationJob("t", "t", "vpt", 0, sources),
        EvaluationJob("t", "t", "linear-probe", 0, sources),
        EvaluationJob("t", "t", "bias", 0, sources),
        EvaluationJob("t", "t", "average", 0, sources, weights=(0.5, 0.5), protocol="init-probe"),
        EvaluationJob("t", "t", "full", 0, sources),
    )
    _write(tmp_path, vpt, 2, False)  # trained under schema 2: stale
    _write(tmp_path, probe, 2, True)  # closed form: no head statistics, kept
    _write(tmp_path, average, 2, True)  # init-probe: closed form, kept
    _write(tmp_path, bias, RESULT_SCHEMA, False)  # current: kept
    with caplog.at_level(logging.WARNING):
        todo = unfinished(tmp_path, [vpt, probe, bias, average, missing])
    assert [job.key for job in todo] == [vpt.key, missing.key]
    assert "1 trained runs" in caplog.text and vpt.key in caplog.text
