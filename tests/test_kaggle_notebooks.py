"""Every notebook of kaggle_notebooks/ run headless, as Kaggle would, on the tiny synthetic dataset.

The competition folders are staged as /kaggle/input/<competition>/ under a temporary folder, the
wheels dataset holds the kit's freshly built wheel, the training notebook's output is the
checkpoints dataset of the others, and each submission is checked with the kit's validator and
scored against the synthetic solution. Parameters are injected papermill-style: a cell after
the one tagged "parameters".
"""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from lmkcomp.clean.embedding_methods import clean_dbscan
from lmkcomp.data import gldv2, synthetic
from lmkcomp.data.layout import LandmarkData
from lmkcomp.features.store import EmbeddingStore
from lmkcomp.kaggle.package import KERNEL_PACKAGES, build_bundle
from lmkcomp.kaggle.paths import (
    CHECKPOINTS_DATASET,
    COMPETITIONS,
    KAGGLE_INPUT,
    KAGGLE_WORKING,
    WHEELS_DATASET,
    stage_competition,
)
from lmkcomp.voting import soft_voting
from lmkcomp.search import exact_search
from lmkcomp.submission import score_submission, validate_submission
from lmkcomp.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[1] / "kaggle_notebooks"
SOURCE = NOTEBOOKS.parent
#: the notebooks and the competition each reads
TASKS = {"recognition.ipynb": "recognition", "retrieval.ipynb": "retrieval", "training.ipynb": "recognition",
         "cleaning.ipynb": "recognition"}
#: a descriptor that trains in seconds on CPU: timm's tiny test ResNet at 64 px, one epoch
TINY_TRAINING = {"model.backbone": "test_resnet", "model.embedding_size": 32, "model.scale": 16.0, "epochs": 1,
                 "finetune_epochs": 0, "batch_size": 8, "image_size": 64, "workers": 0, "data.val_fraction": 0.25}
#: extraction in the kernels: one scale, no flip, no loader processes
FAST_EXTRACTION = {"SCALES": (1.0,), "FLIP": False, "WORKERS": 0}


def parameters_cell(notebook: nbformat.NotebookNode) -> int:
    (position,) = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    return position


def parameter_defaults(source: str) -> dict:
    """NAME = literal assignments of a parameters cell (papermill allows nothing else)."""
    statements = ast.parse(source).body
    assert all(isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Name) for s in statements), source
    return {s.targets[0].id: ast.literal_eval(s.value) for s in statements}


def run_notebook(name: str, workdir: Path, **parameters) -> nbformat.NotebookNode:
    """Execute `name` in a fresh kernel whose working folder is `workdir`, with `parameters`
    injected after its parameters cell; return the executed notebook (a failing cell raises)."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    injected = nbformat.v4.new_code_cell("\n".join(f"{key} = {value!r}" for key, value in parameters.items()))
    injected.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(parameters_cell(notebook) + 1, injected)
    workdir.mkdir(parents=True, exist_ok=True)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return notebook


def cell_text(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook's cells printed."""
    return "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.outputs)


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory) -> SimpleNamespace:
    """/kaggle/input and friends under a temporary folder: the staged competitions, and the
    wheels dataset holding only the kit's wheel (the dependencies are this machine's)."""
    base = tmp_path_factory.mktemp("kaggle")
    synthetic.generate(base / "gldv2", synthetic.preset_config("tiny", long_side=96), seed=5, workers=1, progress=False)
    data = LandmarkData(base / "gldv2")
    inputs = base / "input"
    for task in COMPETITIONS:
        stage_competition(data, inputs, task)
    build_bundle(inputs / WHEELS_DATASET, dependencies=(), source=SOURCE)
    common = {"WHEELS": str(inputs / WHEELS_DATASET), "PACKAGES": str(base / "packages")}
    return SimpleNamespace(base=base, data=data, inputs=inputs, common=common)


@pytest.fixture(scope="module")
def trained(kaggle) -> SimpleNamespace:
    """The training notebook's run: its output folder is the checkpoints dataset of the others."""
    working = kaggle.base / "train-working"
    notebook = run_notebook("training.ipynb", working, COMPETITION=str(kaggle.inputs / COMPETITIONS["recognition"]),
                            WORKING=str(working), CONFIG="cpu-small", OVERRIDES=TINY_TRAINING, **kaggle.common)
    return SimpleNamespace(notebook=notebook, checkpoint=working / "checkpoint-last.pt")


def test_notebooks_are_stored_clean_with_kaggle_defaults():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(TASKS)
    for name, task in TASKS.items():
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        assert 6 <= len(notebook.cells) <= 12, name
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(cell.outputs == [] and cell.execution_count is None for cell in code), f"{name}: outputs not cleared"
        defaults = parameter_defaults(notebook.cells[parameters_cell(notebook)].source)
        assert defaults["COMPETITION"] == str(KAGGLE_INPUT / COMPETITIONS[task]), name
        assert defaults["WHEELS"] == str(KAGGLE_INPUT / WHEELS_DATASET), name
        assert defaults["PACKAGES"] == KERNEL_PACKAGES and defaults["WORKING"] == str(KAGGLE_WORKING), name
        if "CHECKPOINT" in defaults:
            assert Path(defaults["CHECKPOINT"]).parent == KAGGLE_INPUT / CHECKPOINTS_DATASET, name


def test_training_notebook(kaggle, trained):
    # the install cell imported the kit from the wheel it installed, not from this checkout
    assert f"from {kaggle.common['PACKAGES']}/lmkcomp/__init__.py" in cell_text(trained.notebook)
    checkpoint = load_checkpoint(trained.checkpoint)
    assert checkpoint["config"]["data"]["root"] == str(kaggle.inputs / COMPETITIONS["recognition"])
    assert checkpoint["config"]["data"]["layout"] == "kaggle"
    assert checkpoint["config"]["model"]["backbone"] == "test_resnet" and checkpoint["state"]["epoch"] == 1
    with (trained.checkpoint.parent / "metrics.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1"]


def kernel_submission(kaggle, trained, task: str):
    """Run `task`'s submission notebook; return its validated submission and its embedding stores."""
    working, scratch = kaggle.base / f"{task}-working", kaggle.base / f"{task}-scratch"
    run_notebook(f"{task}.ipynb", working, COMPETITION=str(kaggle.inputs / COMPETITIONS[task]),
                 CHECKPOINT=str(trained.checkpoint), SCRATCH=str(scratch), WORKING=str(working), **FAST_EXTRACTION,
                 **kaggle.common)
    competition = LandmarkData(kaggle.inputs / COMPETITIONS[task], "kaggle")
    test_ids = gldv2.read_sample_submission(competition.file("sample_submission"))
    submission = validate_submission(working / "submission.csv", task, test_ids)
    database = "train" if task == "recognition" else "index"
    return submission, EmbeddingStore(scratch / "test"), EmbeddingStore(scratch / database)


@pytest.fixture(scope="module")
def recognition_kernel(kaggle, trained):
    return kernel_submission(kaggle, trained, "recognition")


def test_recognition_notebook(kaggle, recognition_kernel):
    submission, test, train = recognition_kernel
    # soft voting of the 3 nearest train images (lmkcomp.voting), computed here from the
    # embeddings the kernel extracted: every test image gets that landmark and total similarity
    labels = kaggle.data.train_labels()
    scores, neighbours = exact_search(test.array(), train.array()[train.position(labels["id"].tolist())], k=3)
    landmarks, confidences = soft_voting(scores, labels["landmark_id"].to_numpy()[neighbours], k=3)
    expected = dict(zip(test.ids, zip(landmarks.tolist(), confidences.tolist())))
    assert set(submission.predictions) == set(expected)
    for image_id, (landmark, confidence) in submission.predictions.items():
        assert landmark == expected[image_id][0] and confidence == pytest.approx(expected[image_id][1], abs=1e-4)
    result = score_submission(submission, kaggle.data.recognition_solution)
    assert 0.0 <= result["gap"] <= 1.0 and result["num_scored"] == len(kaggle.data.recognition_solution.scored("all"))


def test_retrieval_notebook(kaggle, trained):
    submission, test, index = kernel_submission(kaggle, trained, "retrieval")
    queries, database = test.array(), index.array()
    for image_id, ranked in submission.predictions.items():
        # the list is the top min(100, index) by cosine similarity, best first (up to float rounding)
        similarity = database @ queries[test.position([image_id])[0]]
        chosen = similarity[index.position(ranked)]
        assert len(ranked) == min(100, len(index)) and len(set(ranked)) == len(ranked)
        assert np.all(np.diff(chosen) <= 1e-5)
        others = np.delete(similarity, index.position(ranked))
        assert others.size == 0 or others.max() <= chosen.min() + 1e-5
    result = score_submission(submission, kaggle.data.retrieval_solution)
    assert 0.0 <= result["map@100"] <= 1.0 and result["num_scored"] == len(kaggle.data.retrieval_solution.scored("all"))


def test_cleaning_notebook(kaggle, trained, recognition_kernel):
    # the train embeddings the recognition kernel extracted, attached as a dataset would be
    _, _, store = recognition_kernel
    working = kaggle.base / "clean-working"
    run_notebook("cleaning.ipynb", working, COMPETITION=str(kaggle.inputs / COMPETITIONS["recognition"]),
                 CHECKPOINT=str(trained.checkpoint), TRAIN_EMBEDDINGS=str(store.directory),
                 SCRATCH=str(kaggle.base / "clean-scratch"), WORKING=str(working), **kaggle.common)
    assert not (kaggle.base / "clean-scratch").exists()
    labels = kaggle.data.train_labels()
    kept = gldv2.read_train_clean_csv(working / "train_clean.csv")
    with (working / "removed.csv").open() as handle:
        removed = [row["id"] for row in csv.DictReader(handle)]
    assert sorted(kept["id"].tolist() + removed) == sorted(labels["id"])
    report = json.loads((working / "report.json").read_text())
    assert report["method"] == "dbscan" and report["images"] == len(labels) and report["kept"] == len(kept)
    # the same decisions as the library called directly on those embeddings
    expected = clean_dbscan(labels["id"].tolist(), labels["landmark_id"].to_numpy(),
                            store.array()[store.position(labels["id"].tolist())])
    expected.drop_small_landmarks(2)
    assert sorted(kept["id"]) == sorted(i for i, keep in zip(expected.ids, expected.keep) if keep)
