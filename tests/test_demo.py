"""`lmkcomp demo` and `lmkcomp baseline` end to end on the tiny preset."""

from __future__ import annotations

import json

from lmkcomp.cli import main
from lmkcomp.data import gldv2
from lmkcomp.submission import validate_submission


def test_demo_tiny_writes_valid_scored_submissions(tmp_path, capsys):
    workdir, subs = tmp_path / "work", tmp_path / "subs"
    code = main(["demo", "--preset", "tiny", "--workdir", str(workdir), "--submissions", str(subs), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "baseline thumbnail" in out and "mAP@100" in out
    rows = {row["stage"]: row for row in json.loads((workdir / "demo.json").read_text())["rows"]}
    test_ids = gldv2.read_sample_submission(workdir / "data-tiny-seed0" / "sample_submission.csv")
    for method in ("thumbnail", "constant"):
        validate_submission(subs / f"recognition_baseline-{method}.csv", "recognition", test_ids)
        validate_submission(subs / f"retrieval_baseline-{method}.csv", "retrieval", test_ids)
    # pixels carry some signal: the thumbnail kNN must beat returning arbitrary index images
    assert rows["baseline thumbnail"]["map100"] > rows["baseline constant"]["map100"]
    # the trained descriptor stage ran, and its submissions are valid
    assert 0.0 < rows["arcface (cpu-small)"]["map100"] <= 1.0
    validate_submission(subs / "recognition_gem-arcface-cpu-small.csv", "recognition", test_ids)
    validate_submission(subs / "retrieval_gem-arcface-cpu-small.csv", "retrieval", test_ids)
    assert (workdir / "train-cpu-small" / "metrics.csv").read_text().count("\n") == 1 + 11  # header + epochs
    # a rerun reuses the finished dataset rather than failing or regenerating
    assert main(["demo", "--preset", "tiny", "--workdir", str(workdir), "--submissions", str(subs), "--quiet"]) == 0


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
