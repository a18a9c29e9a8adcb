"""`lmkcomp demo` and `lmkcomp baseline` end to end on the tiny preset."""

from __future__ import annotations

import json
import re

import pytest

from lmkcomp.cli import main
from lmkcomp.data import gldv2
from lmkcomp.data.labels import split_labels
from lmkcomp.data.layout import LandmarkData
from lmkcomp.features.health import embedding_health
from lmkcomp.features.store import EmbeddingStore
from lmkcomp.submission import read_submission, score_submission, validate_submission

pytestmark = pytest.mark.slow


def test_demo_tiny_end_to_end_with_report(tmp_path, capsys):
    workdir, subs = tmp_path / "work", tmp_path / "subs"
    code = main(["demo", "--preset", "tiny", "--workdir", str(workdir), "--submissions", str(subs), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "baseline thumbnail" in out and "mAP@100" in out
    rows = json.loads((workdir / "demo.json").read_text())["rows"]
    by_stage = {row["stage"]: row for row in rows}
    test_ids = gldv2.read_sample_submission(workdir / "data-tiny-seed0" / "sample_submission.csv")
    for method in ("thumbnail", "constant"):
        validate_submission(subs / f"recognition_baseline-{method}.csv", "recognition", test_ids)
        validate_submission(subs / f"retrieval_baseline-{method}.csv", "retrieval", test_ids)
    # pixels carry some signal: the thumbnail kNN must beat returning arbitrary index images
    assert by_stage["baseline thumbnail"]["map100"] > by_stage["baseline constant"]["map100"]
    # every ablation stage wrote a valid submission whose score is the one in the table
    for stage in ("knn-voting", "cleaned", "inliers", "distractors"):
        csv = subs / f"recognition_demo-{stage}.csv"
        validate_submission(csv, "recognition", test_ids)
    for stage in ("knn", "dba-qe", "rerank", "spatial"):
        validate_submission(subs / f"retrieval_demo-{stage}.csv", "retrieval", test_ids)
    data = LandmarkData(workdir / "data-tiny-seed0")
    final = score_submission(read_submission(subs / "retrieval_demo-spatial.csv", "retrieval"), data.retrieval_solution)
    assert rows[-1]["map100"] == pytest.approx(final["map@100"])
    scored = [row for row in rows if row["gap"] is not None]
    assert [row["stage"] for row in scored[:2]] == ["baseline thumbnail", "baseline constant"]
    assert len(scored) == 2 + 7
    assert (workdir / "run-tiny-seed0" / "train" / "metrics.csv").read_text().count("\n") == 1 + 11  # header + epochs
    # the demo's descriptor is healthy on tiny: trained with cpu-small's batch size of 32, its ~50
    # images gave no training step at all (then, with the bucket remainders pooled, one an
    # epoch) and every embedding pointed one way (mean-vector norm 0.98, then 0.86; AUC 0.48, 0.56)
    train = EmbeddingStore(workdir / "run-tiny-seed0" / "features" / "train")
    health = embedding_health(train.array(), split_labels(data, "train", train.ids))
    assert health.mean_norm < 0.5 and health.auc > 0.65, health.summary()
    # the cleaning stage scored itself against the synthetic noise truth
    report = json.loads((workdir / "run-tiny-seed0" / "clean" / "report.json").read_text())
    assert report["against_noise_truth"]["recall"] > 0.5

    page = (subs / "report" / "index.html").read_text()
    assert "<table>" in page and "+ discriminative re-ranking" in page and f"{rows[-1]['map100']:.4f}" in page
    for image in re.findall(r'<img src="([^"]+)"', page):
        assert (subs / "report" / image).stat().st_size > 1000
    assert "Descriptor health" in page
    assert len(re.findall(r'<img src=', page)) == 2 + 1 + 4 + 4 + 3

    # a rerun reuses every finished stage: nothing is recomputed, the table is the same
    (workdir / "run-tiny-seed0" / "train" / "checkpoint-last.pt").unlink()
    assert main(["demo", "--preset", "tiny", "--workdir", str(workdir), "--submissions", str(subs), "--quiet",
                 "--no-report"]) == 0
    assert not (workdir / "run-tiny-seed0" / "train" / "checkpoint-last.pt").exists()
    assert json.loads((workdir / "demo.json").read_text())["rows"][1:] == rows[1:]


def test_score_cli_on_demo_output(tmp_path, capsys):
    workdir, subs = tmp_path / "work", tmp_path / "subs"
    main(["make-dataset", str(workdir), "--preset", "tiny", "--quiet"])
    main(["baseline", str(workdir), "--method", "thumbnail", "--out", str(subs), "--quiet"])
    capsys.readouterr()
    assert main(["validate", "--task", "retrieval", "--submission", str(subs / "retrieval_baseline-thumbnail.csv"),
                 "--data", str(workdir)]) == 0
    assert main(["score", "--task", "retrieval", "--solution", str(workdir / "retrieval_solution_v2.1.csv"),
                 "--submission", str(subs / "retrieval_baseline-thumbnail.csv"), "--split", "private"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["split"] == "private" and 0.0 <= result["map@100"] <= 1.0 and result["num_scored"] > 0


def test_demo_descriptor_can_start_from_a_pretrained_run(tmp_path):
    from lmkcomp.demo.run import train_config_for

    data = LandmarkData(tmp_path)
    scratch = train_config_for(data, "cpu-small")
    tuned = train_config_for(data, "cpu-small", tmp_path / "v1" / "checkpoint-last.pt")
    assert scratch.model.pretrained is None and tuned.model.pretrained == str(tmp_path / "v1" / "checkpoint-last.pt")
    assert tuned.model.head == scratch.model.head == "softmax" and tuned.data.root == str(tmp_path)
