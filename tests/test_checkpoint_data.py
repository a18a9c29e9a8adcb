"""Commands on a checkpoint find its dataset: `--data`, else the root and layout it was trained on."""

from __future__ import annotations

import argparse

from lmkcomp.commands import args as command_args


def test_without_data_the_checkpoints_root_and_layout_are_taken(tiny_root, monkeypatch):
    monkeypatch.setattr("lmkcomp.train.checkpoint.load_checkpoint",
                        lambda path: {"config": {"data": {"root": str(tiny_root), "layout": "kaggle"}}})
    data = command_args.checkpoint_data(argparse.Namespace(data=None, checkpoint="run/checkpoint-last.pt"))
    assert data.root == tiny_root and data.layout.name == "kaggle"


def test_data_and_its_layout_win_over_the_checkpoint(tiny_root, monkeypatch):
    monkeypatch.setattr("lmkcomp.train.checkpoint.load_checkpoint",
                        lambda path: (_ for _ in ()).throw(AssertionError("the checkpoint was read")))
    given = command_args.checkpoint_data(argparse.Namespace(data=str(tiny_root), layout="gldv2", checkpoint="x"))
    assert given.root == tiny_root and given.layout.name == "gldv2"
    # a command without --layout (evaluate) reads --data as the gldv2 layout
    assert command_args.checkpoint_data(argparse.Namespace(data=str(tiny_root), checkpoint="x")).layout.name == "gldv2"
