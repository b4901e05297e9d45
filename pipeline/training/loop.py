"""The training loop, one for every network family (families.py says what differs: networks, loss,
preview). Read it top to bottom: set-up, networks, optimiser, resume, then the loop (gradients,
update, EMA) with its maintenance once per tick (status line, metrics, snapshot, preview).
Progress is counted in training samples, over all ranks.

Runs unchanged on a CPU, a GPU, or many of either under ``torchrun``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from models.weights import load_state_dict_into
from pipeline.training.batches import BatchStream, DataSource
from pipeline.training.checkpoint import (
    Resume,
    initial_weights,
    keep_snapshot,
    save_checkpoint,
    start_training,
)
from pipeline.training.distributed import (
    all_finite,
    barrier,
    generator_states,
    init_distributed,
    mean_over_ranks,
)
from pipeline.training.ema import EMA
from pipeline.training.families import Family
from pipeline.training.progress import Progress, write_curve, write_metrics
from pipeline.training.tracker import Tracker
from rendering.errors import InputError


def learning_rate(
    samples: int,
    lr: float,
    warmup_samples: int,
    total_samples: int,
    decay_samples: int = 0,
    lr_min: float = 0.0,
) -> float:
    """The learning rate after ``samples`` samples: linear warm-up to ``lr``, constant, then a cosine
    decay to ``lr_min`` over the last ``decay_samples`` of ``total_samples`` (warm-up/stable/decay)."""
    rate = lr * min(1.0, samples / max(warmup_samples, 1))
    decay_start = total_samples - decay_samples
    if decay_samples > 0 and samples > decay_start:
        done = min(1.0, (samples - decay_start) / decay_samples)
        rate = lr_min + (rate - lr_min) * 0.5 * (1.0 + math.cos(math.pi * done))
    return rate


def training_loop(
    family: Family,  # What is trained: its config, networks, loss and preview (families.py).
    data: DataSource,  # Batches of the family's fields: an iterable, or a callable epoch -> iterable.
    run_dir: str | os.PathLike,  # Checkpoint directory (see checkpoint.py).
    total_samples: int = 40_000,  # Training length in samples (all ranks together).
    lr: float | None = None,  # AdamW learning rate after warm-up (None: the family's, the paper's).
    weight_decay: float = 0.01,  # AdamW decoupled weight decay.
    warmup_samples: int = 100_000,  # Linear learning-rate warm-up, in samples.
    lr_decay_samples: int = 0,  # Cosine decay of the learning rate to lr_min over the last this many.
    lr_min: float = 0.0,  # Learning rate at the end of the decay.
    init_from: str | os.PathLike | None = None,  # Start from this model's weights (fine-tuning).
    ema_halflife_samples: int = 10_000,  # Half-life of the EMA of the weights, in samples.
    ema_rampup: float | None = 0.05,  # Early on, EMA half-life <= this × samples seen.
    grad_clip: float = 1.0,  # Max global gradient norm (0: no clipping).
    mixed_precision: bool = True,  # bf16 autocast, on GPUs only.
    seed: int = 0,  # Initial weights and the training noise.
    tick_samples: int = 2_000,  # Status line and per-tick metrics every this many samples.
    snapshot_ticks: int = 10,  # Checkpoint every this many ticks, and at the end.
    keep_snapshots: bool = False,  # Also keep each snapshot's EMA weights (run_dir/snapshots/<samples>).
    preview_ticks: int = 10,  # Sample grid to the tracker every this many ticks (0: never).
    resume: Resume = False,  # False: start fresh; True / "auto": continue run_dir's (checkpoint.py).
    fingerprint: dict | None = None,  # Settings and data version, besides network; checked on resume.
    stop_at_samples: int | None = None,  # End this invocation early, checkpointed (resume later).
    device: str | torch.device | None = None,  # Default: this rank's GPU if any, else the CPU.
    tracker: Tracker | None = None,  # Receives metrics and images (pipeline.registry.RunTracker).
    metrics_path: str | os.PathLike | None = None,  # Latest tick's metrics as JSON (dvc metrics).
    plot_path: str | os.PathLike | None = None,  # Loss curve as CSV, one row per tick (dvc plots).
    data_name: str = "the training data",  # What errors call the data (the stage: its split directory).
    log: Callable[[str], None] = print,  # Where status lines go (rank 0 only).
) -> dict[str, float]:
    """Train the family's networks; returns the last tick's metrics (mean losses, samples/s, …)
    with ``samples``, ``steps`` and ``complete``. A non-finite loss stops the training with an
    InputError naming the step and the data; the last snapshot stays as it was."""
    network = family.config
    lr = family.lr if lr is None else lr
    dist = init_distributed(device)
    amp = mixed_precision and dist.device.type == "cuda"
    torch.manual_seed(seed)

    # Networks, their EMA, the optimiser and the generator of the training noise.
    nets = {name: net.to(dist.device).train() for name, net in family.networks().items()}
    ema = EMA(nets, ema_halflife_samples, ema_rampup)
    # A network the family does not train (no parameter requires a gradient) keeps init_from's weights.
    frozen = frozenset(
        name for name, net in nets.items() if not any(p.requires_grad for p in net.parameters())
    )
    if frozen and init_from is None:
        raise InputError(
            "params.yaml",
            f"train_{family.name} leaves {', '.join(sorted(frozen))} untrained: set init_from, "
            "the model whose weights it keeps",
        )
    params = [p for net in nets.values() for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator(dist.device).manual_seed(seed + 1000 * dist.rank)
    initial, fresh = (None, [])
    if init_from is not None:  # read before resume
        initial, fresh = initial_weights(init_from, network, frozen)

    # Resume (weights, EMA, optimiser, progress, data position and RNG states) or start fresh.
    state = start_training(
        family.name,
        run_dir,
        network,
        fingerprint,
        resume,
        nets,
        ema.nets,
        optimizer,
        generator,
        dist,
        tracker.run_id if tracker is not None else None,
        log,
    )
    saved_samples = state["samples"]  # what the checkpoint in run_dir holds (0: none yet)
    if initial is not None and saved_samples == 0:
        for weights in (nets, ema.nets):
            loaded = {name: net for name, net in weights.items() if name not in fresh}
            load_state_dict_into(loaded, {k: v.to(dist.device) for k, v in initial.items()})
        if dist.is_main:
            kept = f" (not trained, kept: {', '.join(sorted(frozen))})" if frozen else ""
            new = f"; fresh weights (another size there): {', '.join(fresh)}" if fresh else ""
            log(f"{family.name}: starting from the weights of {init_from}{kept}{new}")
    step_nets = nets
    if dist.enabled:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        step_nets = {
            name: net if name in frozen else DistributedDataParallel(net, device_ids=ids)
            for name, net in nets.items()
        }

    stream = BatchStream(data, dist.device, **state["data"])
    progress = Progress(total_samples, state["samples"])
    end = min(total_samples, stop_at_samples or total_samples)
    preview_batch, tick_metrics = None, {}
    while state["samples"] < end:
        # One optimisation step.
        batch = next(stream)
        if preview_batch is None:
            preview_batch = batch
        batch_samples = batch["refmap_obs"].shape[0] * dist.world_size
        step_lr = learning_rate(
            state["samples"] + batch_samples, lr, warmup_samples, total_samples, lr_decay_samples, lr_min
        )
        for group in optimizer.param_groups:
            group["lr"] = step_lr
        with torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=amp):
            loss, parts, logged = family.loss(step_nets, batch, generator, state["samples"], total_samples)
        if not all_finite(loss, dist):
            kept = f"its checkpoint of {saved_samples} samples" if saved_samples else "no checkpoint"
            value, step = float(loss.detach()), state["step"] + 1
            raise InputError(
                data_name,
                f"{family.name} training stopped: the loss is {value} at step {step} "
                f"(after {state['samples']} samples); look for NaN/Inf values in the data "
                f"(`drmnet verify-shards`) or lower the learning rate; {run_dir} keeps {kept}",
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        state["samples"] += batch_samples
        state["step"] += 1
        ema.update(nets, batch_samples, state["samples"])
        metrics = {name: float(value) for name, value in parts.items()}
        progress.add(metrics)
        if tracker is not None and dist.is_main:
            tracker.log_metrics({**metrics, "lr": step_lr, **logged}, state["samples"])

        # Maintenance once per tick.
        done = state["samples"] >= end
        tick = state["samples"] // tick_samples
        if not done and tick == (state["samples"] - batch_samples) // tick_samples:
            continue
        tick_metrics = mean_over_ranks(progress.tick(state["samples"]), dist)
        row = {"samples": state["samples"], "step": state["step"], **tick_metrics, "lr": step_lr}
        state["history"].append(row)
        if dist.is_main:
            log(progress.line(family.name, state["samples"], state["step"], tick_metrics))
        if done or tick % snapshot_ticks == 0:
            state["data"] = stream.state()
            state["generator"] = generator_states(generator, dist)
            state["torch_rng"] = torch.get_rng_state()
            state["complete"] = state["samples"] >= total_samples
            if dist.is_main:
                # The run holds what the checkpoint holds (a resume continues it): flushed first, so
                # that a kill between the two cannot leave the run without the checkpoint's steps.
                if tracker is not None:
                    tracker.flush()
                save_checkpoint(run_dir, network, nets, ema.nets, optimizer, state)
                if keep_snapshots:
                    keep_snapshot(run_dir, network, ema.nets, state["samples"])
                summary = {"samples": state["samples"], "steps": state["step"], **tick_metrics}
                if metrics_path is not None:
                    write_metrics(metrics_path, summary)
                if plot_path is not None:
                    write_curve(plot_path, state["history"])
            saved_samples = state["samples"]
            barrier(dist)
        if tracker is not None and dist.is_main and preview_ticks and (done or tick % preview_ticks == 0):
            image = family.preview(ema.nets, preview_batch, seed)
            tracker.log_image(image, f"previews/{family.name}_{state['samples']:09d}.png", state["samples"])

    if tracker is not None and dist.is_main:
        tracker.flush()
    return {
        "samples": state["samples"],
        "steps": state["step"],
        "complete": bool(state.get("complete")),
        **tick_metrics,
    }
