"""Where things are inside a Kaggle kernel, and a local stand-in for a competition folder.

A kernel sees each competition and each attached dataset read-only under
``/kaggle/input/<name>/``, and keeps what it writes under ``/kaggle/working/`` (a code
competition scores ``/kaggle/working/submission.csv``). The notebooks in ``kaggle_notebooks/``
take these paths as parameter defaults; `stage_competition` builds the same folders from a
dataset in the ``gldv2`` layout, so a notebook can be rehearsed (and tested) off Kaggle.
"""

from __future__ import annotations

from pathlib import Path

from lmkcomp.data import gldv2
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError

KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")

#: the data folder of each task's competition (the 2021 editions; 2020's end in -2020)
COMPETITIONS = {"recognition": "landmark-recognition-2021", "retrieval": "landmark-retrieval-2021"}
#: image folders each competition ships, besides sample_submission.csv (and train.csv with train/)
COMPETITION_SPLITS = {"recognition": ("train", "test"), "retrieval": ("index", "test")}
#: the submission column of each task, which is also its sample_submission.csv header
SUBMISSION_COLUMNS = {"recognition": "landmarks", "retrieval": "images"}

#: default names of the datasets a user attaches: the bundle `lmkcomp kaggle package` writes,
#: and the trained checkpoints (a training kernel's output)
WHEELS_DATASET = "lmkcomp-wheels"
CHECKPOINTS_DATASET = "lmkcomp-checkpoints"


def stage_competition(data: LandmarkData, input_dir: str | Path, task: str) -> Path:
    """Lay out `data` as `task`'s Kaggle competition folder `input_dir/<competition>/`; return it.

    The image folders are symbolic links to `data`'s; `train.csv` is written in the 2020/2021
    format (`id,landmark_id`, no url) and `sample_submission.csv` lists every test id with an
    empty prediction under the task's column. The solutions stay behind, as on Kaggle. Running
    it again refreshes the folder.
    """
    if task not in COMPETITIONS:
        raise UserInputError(f"unknown task {task!r}; expected one of {', '.join(COMPETITIONS)}")
    folder = Path(input_dir) / COMPETITIONS[task]
    folder.mkdir(parents=True, exist_ok=True)
    for split in COMPETITION_SPLITS[task]:
        source = (data.root / split).resolve()
        if not source.is_dir():
            raise UserInputError(f"{source}: split folder not found")
        link = folder / split
        if link.exists() and not link.is_symlink():
            raise UserInputError(f"{link}: exists and is not a link this function made; choose another folder")
        link.unlink(missing_ok=True)
        link.symlink_to(source, target_is_directory=True)
        if split == "train":
            labels = data.train_labels()
            gldv2.write_csv_rows(folder / "train.csv", ["id", "landmark_id"],
                                 zip(labels["id"].tolist(), labels["landmark_id"].tolist()))
    gldv2.write_csv_rows(folder / "sample_submission.csv", ["id", SUBMISSION_COLUMNS[task]],
                         ((image_id, "") for image_id in data.split_ids("test")))
    return folder
