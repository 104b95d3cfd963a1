"""Training one case to a target accuracy or through a budget, with its learning curve.

The step is nanoGPT-plain: forward, cross-entropy, backward, optimizer step, schedule step.
The clock: training time runs from the first batch to each evaluation and resumes after
it; on CUDA the device is synchronised before every reading, so queued work is counted
where it was queued, and evaluation time is kept apart (``eval_time_s``), never in the
training time. Time and samples to target are those at the first evaluation whose test
accuracy reaches the target, so their resolution is the evaluation interval (one epoch by
default). Nothing is synchronised between two evaluations: the loss and training accuracy
are summed on the device and read at the evaluation, which is also where a non-finite loss
is caught (the case ends ``diverged`` with its curve so far).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

import models
import optimizers
from bench.kinds.training.datasets import DeviceDataset, Split, epoch_batches, steps_per_epoch
from bench.kinds.training.suite import TrainCase
from bench.measure import faults, memory
from bench.measure.env import provenance
from bench.measure.faults import Diverged
from bench.measure.setup import device_name
from bench.record import (
    TRAINING_TO_ACCURACY,
    CaseConfig,
    Provenance,
    Record,
    StaticMemory,
    StepTiming,
    TrainingOutcome,
    blocks,
)


@dataclass
class Progress:
    """What a training run has measured so far; becomes the Record's training fields."""

    out: dict = field(default_factory=dict)
    curve: list[dict] = field(default_factory=list)

    def add(self, row: dict, eval_time_s: float) -> None:
        """One evaluation's curve row; the record's fields become what it says (final values,
        totals so far, best test accuracy), so a run cut short keeps them."""
        self.curve.append(row)
        self.out.update(
            steps=row["step"],
            samples_seen=row["samples_seen"],
            epochs_trained=row["epoch"],
            train_time_s=row["train_time_s"],
            eval_time_s=eval_time_s,
            train_throughput=row["samples_seen"] / row["train_time_s"] if row["train_time_s"] > 0 else None,
            final_loss=row["train_loss"],
            final_train_accuracy=row["train_accuracy"],
            final_test_accuracy=row["test_accuracy"],
            best_test_accuracy=max(row["test_accuracy"], self.out.get("best_test_accuracy") or 0.0),
        )


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seeded(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: DeviceDataset, split: Split, batch_size: int) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode over ``split``."""
    model.eval()
    loss, correct = torch.zeros((), device=split.labels.device), torch.zeros((), device=split.labels.device)
    for images, labels in zip(split.images.split(batch_size), split.labels.split(batch_size), strict=True):
        logits = model(dataset.normalise(images))
        loss += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    model.train()
    return float(loss) / len(split), float(correct) / len(split)


def time_input_epoch(dataset: DeviceDataset, case: TrainCase, device: torch.device) -> float:
    """Seconds for one epoch of ``epoch_batches`` alone, synchronised, without training: the
    cost of the input pipeline (gather, augment, normalise) in an epoch. Drawn from its own
    generator, so the training run's batches are unaffected."""
    _synchronise(device)
    start = time.perf_counter()
    for _ in epoch_batches(dataset, case.batch_size, case.augment, _seeded(case.seed + 1_000_003, device)):
        pass
    _synchronise(device)
    return time.perf_counter() - start


def budget_steps(case: TrainCase, per_epoch: int) -> int:
    """The training steps the case's budget allows: ``steps``, or ``epochs`` full epochs."""
    return case.steps if case.steps is not None else case.epochs * per_epoch


def train(case: TrainCase, dataset: DeviceDataset, device: torch.device, progress: Progress) -> None:
    """Train ``case`` on ``dataset`` (already on ``device``), filling ``progress`` as it goes:
    the record's training fields in ``progress.out``, one curve row per evaluation.
    Raises Diverged if the loss becomes non-finite (checked at each evaluation)."""
    out, per_epoch = progress.out, steps_per_epoch(dataset, case.batch_size)
    total = budget_steps(case, per_epoch)
    eval_every = case.eval_every or per_epoch
    # Same seed, same start: the weights come from the seed on the CPU whatever the device
    # or recipe, and so do the batch order and the augmentation, from their own generator.
    torch.manual_seed(case.seed)
    model = models.build(case.model, in_channels=case.input_shape[0], num_classes=case.num_classes).to(device)
    optimizer = optimizers.build(case.recipe.optimizer, model.parameters(), **case.recipe.hyperparameters)
    scheduler = case.recipe.schedule.scheduler(optimizer, total)
    out["params"] = sum(p.numel() for p in model.parameters())
    out["param_bytes"] = memory.param_bytes(model)
    out["input_epoch_s"] = time_input_epoch(dataset, case, device)
    generator = _seeded(case.seed, device)

    step, samples, train_time, eval_time = 0, 0, 0.0, 0.0
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
    since = 0  # samples since the previous evaluation
    model.train()
    _synchronise(device)
    started = time.perf_counter()
    while step < total:
        for images, labels in epoch_batches(dataset, case.batch_size, case.augment, generator):
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.detach().argmax(1) == labels).sum()
            step, samples, since = step + 1, samples + len(labels), since + len(labels)
            if step % eval_every and step < total:
                continue
            _synchronise(device)
            train_time += time.perf_counter() - started
            evaluated = time.perf_counter()
            train_loss, train_accuracy = float(loss_sum) / since, float(correct) / since
            test_loss, test_accuracy = evaluate(model, dataset, dataset.test, case.eval_batch_size)
            seconds = time.perf_counter() - evaluated
            eval_time += seconds
            row = {
                "evaluation": len(progress.curve) + 1,
                "step": step,
                "epoch": samples / len(dataset.train),
                "samples_seen": samples,
                "train_time_s": train_time,
                "eval_time_s": seconds,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": train_loss,
                "train_accuracy": train_accuracy,
                "test_loss": test_loss,
                "test_accuracy": test_accuracy,
            }
            progress.add(row, eval_time)
            if "optimizer_state_bytes" not in out:  # the state exists from the first step on
                out["grad_bytes"] = memory.grad_bytes(model)
                out["optimizer_state_bytes"] = memory.optimizer_state_bytes(optimizer)
            if not torch.isfinite(torch.tensor(train_loss)):
                raise Diverged(f"the training loss became {train_loss} by step {step}")
            if test_accuracy >= case.target_accuracy and out.get("time_to_target_s") is None:
                out.update(time_to_target_s=train_time, samples_to_target=samples, epochs_to_target=row["epoch"])
                if case.stop_at_target:
                    return
            loss_sum.zero_()
            correct.zero_()
            since = 0
            if step >= total:
                break
            _synchronise(device)
            started = time.perf_counter()


def run_training_case(
    case: TrainCase, dataset: DeviceDataset, *, run_id: str, suite: str, device: torch.device, env: dict
) -> tuple[Record, list[dict]]:
    """Train one case on ``device`` and return its Record (filed under ``run_id`` and
    ``suite``, ``env`` as ``collect_env`` gives it) and learning curve, whatever happened
    (bar a stop signal): a failure is the record's status, with the curve up to it."""
    progress = Progress()
    with faults.case_outcome(device) as outcome:
        train(case, dataset, device, progress)
    out = {**progress.out, "data_load_s": dataset.load_s}
    record = Record(
        kind=TRAINING_TO_ACCURACY,
        case_id=case.case_id,
        case=CaseConfig(
            model=case.model,
            optimizer=case.recipe.optimizer,
            precision=case.precision,
            steps=out.pop("steps", 0),
            warmup=0,
            repeats=1,
            batch_size=case.batch_size,
            channels_last=False,
            compile=False,
            dataset=case.dataset,
            input_shape=list(case.input_shape),
            hyperparameters=case.recipe.settings(),
            recipe=case.recipe.name,
            seed=case.seed,
            target_accuracy=case.target_accuracy,
        ),
        status=outcome.status,
        error=outcome.error,
        **blocks(provenance(run_id, suite, device, device_name(device, env), env), Provenance),
        **blocks(out, StaticMemory, StepTiming, TrainingOutcome),
    )
    rows = [
        {"case_id": case.case_id, "model": case.model, "recipe": case.recipe.name, "seed": case.seed, **row}
        for row in progress.curve
    ]
    return record, rows
