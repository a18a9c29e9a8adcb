"""`lmkcomp bench train` / `lmkcomp bench extract`: images/s and peak memory of a backbone at a
resolution, with and without channels_last, AMP and torch.compile, on random tensors (so the
figures measure the model, not the JPEG decoder)."""

from __future__ import annotations

import json
import sys
import time

import torch

from lmkcomp.bench.common import peak_memory_mb, report, run_variant
from lmkcomp.devices import resolve_device
from lmkcomp.features.extract import autocast_context, embed_tensor
from lmkcomp.models import ModelConfig, create_model

VARIANTS = (
    {"name": "fp32"},
    {"name": "channels_last", "channels_last": True},
    {"name": "bf16", "amp": "bf16"},
    {"name": "bf16+channels_last", "amp": "bf16", "channels_last": True},
    {"name": "compile", "compile": True},
)


def _measure(spec: dict) -> dict:
    """One variant, in this process: warm-up steps, then timed steps."""
    device = resolve_device(spec["device"], "--device")
    torch.manual_seed(0)
    model = create_model(ModelConfig(backbone=spec["backbone"], embedding_size=512, head=spec["head"]), spec["classes"]).to(device)
    images = torch.randn(spec["batch_size"], 3, spec["image_size"], spec["image_size"], device=device)
    labels = torch.randint(0, spec["classes"], (spec["batch_size"],), device=device)
    if spec.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    amp = spec.get("amp", "none")
    if spec["task"] == "train":
        network = torch.compile(model) if spec.get("compile") else model
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        model.train()

        def step() -> None:
            with autocast_context(device, amp):
                loss = torch.nn.functional.cross_entropy(network(images, labels)["logits"].float(), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    else:
        model.eval()
        scales = tuple(spec.get("scales", (1.0,)))
        embed = torch.compile(embed_tensor) if spec.get("compile") else embed_tensor

        def step() -> None:
            with autocast_context(device, amp):
                embed(model, images, scales, spec.get("flip", False))

    for _ in range(spec["warmup"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(spec["steps"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    return {"images_per_s": spec["batch_size"] * spec["steps"] / elapsed, "peak_memory_mb": peak_memory_mb(device)}


def run_benchmark(task: str, backbone: str, image_size: int, batch_size: int, device: str = "auto", steps: int = 5,
                  warmup: int = 2, out: str = "bench/train.json", scales=(1.0,), flip: bool = False,
                  variants=VARIANTS) -> str:
    """Run every variant side by side and return the printed table."""
    rows = []
    for variant in variants:
        spec = {"task": task, "backbone": backbone, "image_size": image_size, "batch_size": batch_size,
                "device": device, "steps": steps, "warmup": warmup, "classes": 1000, "head": "arcface",
                "scales": list(scales), "flip": flip, **variant}
        rows.append(run_variant("lmkcomp.bench.models", spec))
    title = f"bench {task}: {backbone} at {image_size}px, batch {batch_size}, device {device}"
    columns = [("name", "variant"), ("images_per_s", "images/s"), ("peak_memory_mb", "peak MB")]
    return report(title, rows, columns, out, ratio_of="images_per_s")


if __name__ == "__main__":
    print(json.dumps(_measure(json.loads(sys.argv[1]))))
