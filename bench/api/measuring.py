"""The measuring commands as functions: ``run`` (training steps, and data parallel),
``optim`` (the optimizer step alone) and ``train`` (training to accuracy).

Each checks everything it can before any work (raising the errors the command line turns
into exit status 2: UnknownNameError, SuiteError, SetupError, DatasetNotFoundError,
RunFolderError, HistoryError, MachineNameError), then runs inside a RunSession
(bench.api.session) and returns a RunResult: the run folder and the exit status (0 done,
1 a case or a write failed, 130/143 interrupted; see bench.api.session.EXIT_*).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from bench.api.options import Destinations, LaunchOptions, OptimOptions, RunOptions, TrainOptions
from bench.api.session import Console, RunSession

if TYPE_CHECKING:
    import torch


@dataclasses.dataclass(frozen=True)
class RunResult:
    """A measuring run as it ended: its folder (None for a data-parallel rank other than 0,
    which writes nothing) and its exit status."""

    path: Path | None
    exit_status: int


#: The default destinations (results/, results/history.sqlite) and launch (one process).
DESTINATIONS = Destinations()
ONE_PROCESS = LaunchOptions()
#: Flags of ``run`` that override the suite, by the suite key they replace.
OVERRIDES = (
    *("device", "models", "optimizers", "batch_sizes", "precision", "dataset", "steps", "warmup", "repeats"),
    "threads",
)
#: The switches timm's benchmark script taught people, and models by reference.
SWITCHES = ("input_size", "num_classes", "lr", "momentum", "betas", "eps", "weight_decay")


def amp_precision(device: object) -> str:
    """What ``--amp`` means on ``device``: bf16 where the device has it, else fp16."""
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16"  # CPU autocast runs bf16 only


def apply_switches(suite: object, options: RunOptions, device: object) -> object:
    """``suite`` with the run switches of ``options`` applied, each checked as in a suite file
    and named by its flag. Raises SuiteError."""
    from bench.checks import SuiteError

    if options.amp and options.precision:
        raise SuiteError("--amp picks the precision itself; give --amp or --precision, not both")
    changes = {key: getattr(options, key) for key in SWITCHES if getattr(options, key) is not None}
    if options.channels_last:
        changes["channels_last"] = [True]
    if options.compile or options.compile_mode:
        changes["compile"] = [True]
    if options.compile_mode:
        changes["compile_mode"] = [options.compile_mode]
    if options.amp:
        changes["precision"] = [amp_precision(device)]
    suite = suite.override(**changes)
    return suite.with_model_kwargs(options.model_kwargs) if options.model_kwargs else suite


def grid_progress(console: Console):  # noqa: ANN201  (a callback)
    """What says ``expanding the grid: N of M cases`` while a large grid expands."""

    def report(made: int, total: int) -> None:
        console.say(f"expanding the grid: {made:,} of {total:,} cases")

    return report


def run(
    options: RunOptions,
    destinations: Destinations = DESTINATIONS,
    launch: LaunchOptions = ONE_PROCESS,
    console: Console | None = None,
) -> RunResult:
    """``convbench run``: run a suite; write records, environment, resolved suite, receptive
    fields (if the suite has an [rf] section), tables, figures and reports; add the run to the
    history.

    Stop signals (Ctrl-C, SIGTERM) end the measuring between two records; closing the run
    (manifest, history row) is never cut short, and the report, which ``convbench report``
    can write again, is skipped or stopped with a message saying so."""
    import torch

    from bench.analyse.fairness import sharing_warnings
    from bench.kinds.parallel import launch as parallel
    from bench.kinds.step import isolation, prediction_worker, runner
    from bench.kinds.step.suite import load_suite
    from bench.measure import data, setup
    from bench.measure.env import collect_env
    from bench.measure.machine import machine_identity

    console = console or Console("run")
    # Everything that can be wrong with the input is found before the run folder exists.
    suite = load_suite(options.suite or ("nightly" if torch.cuda.is_available() else "smoke"))
    suite = suite.override(**{key: getattr(options, key) for key in OVERRIDES if getattr(options, key) is not None})
    if options.detailed:
        suite = suite.override(detailed=True)
    if options.isolate:
        suite = suite.override(isolate=True)
    if options.tag:
        suite = suite.override(tags=[*suite.tags, *options.tag])
    suite, ranks = parallel.plan(launch, suite)
    device = setup.resolve_device(suite.device)
    suite = apply_switches(suite.override(device=str(device)), options, device)
    parallel.check_device(suite, device)
    cases = suite.cases(limits=not options.no_limits, progress=grid_progress(console))
    setup.check_cases(cases, device)
    data_root = options.data_root or data.DEFAULT_ROOT
    if suite.dataset != data.SYNTHETIC:
        data.open_dataset(suite.dataset, data_root, options.download)
    suite = receptive_fields_for(suite, options, console)
    rf = suite.sections.get("rf")
    if suite.threads is not None:  # before torchrun, whose workers inherit it
        from bench.measure.load import use_threads

        use_threads(suite.threads)
    if ranks is not None and not parallel.world.launched():
        return RunResult(None, parallel.relaunch(launch))  # the workers come back here, launched

    env = collect_env()
    if device.type == "cuda":
        for warning in sharing_warnings(env, device.index):
            console.warn(warning)
    machine = machine_identity(device, env, destinations.machine)
    run_case = runner.run_case
    run_id = destinations.run_id
    if ranks is not None:
        from bench.kinds.parallel.cases import DistributedRunner
        from bench.storage.store import check_run_id, new_run_id

        device = parallel.rank_device(device)
        joined = parallel.world.join(device, launch.collective_timeout)
        run_id = joined.share("convbench/run_id", check_run_id(run_id or new_run_id()))
        run_case = DistributedRunner(joined)
    context = runner.RunContext(
        run_id or "",
        suite.name,
        device,
        env,
        data_root,
        options.download,
        peak_tflops=options.peak_tflops,
        find_max_batch=options.find_max_batch,
        memory_pass=not options.no_memory_pass,
        memory_cap_bytes=options.memory_cap,
    )
    if ranks is not None and joined.rank != 0:
        return RunResult(None, parallel.follow(cases, context, run_case))  # rank 0 alone writes the run
    if ranks is None:  # data-parallel ranks run their cases in turn (isolation is refused for them)
        run_case = isolation.CaseRunner(suite.isolate, console.say)

    try:
        session = RunSession(
            "run",
            dataclasses.replace(destinations, run_id=run_id),
            suite.name,
            suite.to_toml(),
            env,
            [case.case_id for case in cases],
            machine,
            sections=["rf"] if rf is not None else [],
            tags=suite.tags,
            console=console,
        )
        context = dataclasses.replace(context, run_id=session.run_id)
        # Memory predictions ahead in a worker (CUDA, --predict-ahead) for cases run in this process,
        # in turn; not beside --find-max-batch, where the worker's CUDA context would take memory it fits in.
        ahead = options.predict_ahead and device.type == "cuda"
        ahead = ahead and ranks is None and not suite.isolate and not options.find_max_batch
        predictions = prediction_worker.predicting_ahead(cases, device, context.memory_pass, context.reuse, ahead)
        with session, _memory_guard(device, options.memory_limit), predictions:
            for case in cases:
                session.record(case.case_id, lambda case=case: run_case(case, context))
            if rf is not None:
                from bench.receptive.section import run_rf_section

                session.section(
                    "rf", f"receptive fields of {', '.join(rf.models)}", lambda path: run_rf_section(rf, path)
                )
    finally:
        parallel.world.leave()
    return RunResult(session.path, session.exit_status)


def receptive_fields_for(suite: object, options: RunOptions, console: Console) -> object:
    """``suite`` with its ``[rf]`` section following the run: dropped with ``no_rf``;
    analysing the models given in ``options.models`` (not the suite's own) where they are
    named; said on the console either way. Raises SuiteError where a model given cannot be
    analysed (the section is checked as in a suite file)."""
    from bench.checks import SuiteError
    from bench.receptive.section import rf_section_from_toml

    table = suite.section_tables.get("rf")
    if table is None:
        return suite
    sections = {name: section for name, section in suite.sections.items() if name != "rf"}
    tables = {name: value for name, value in suite.section_tables.items() if name != "rf"}
    if options.no_rf:
        console.say("the suite's [rf] section is skipped (--no-rf)")
        return dataclasses.replace(suite, sections=sections, section_tables=tables)
    if not options.models or options.models == "all" or list(table.get("models", ())) == list(options.models):
        return suite
    table = {key: value for key, value in table.items() if key != "heatmap_layers"}
    table["models"] = list(dict.fromkeys(options.models))
    try:
        section = rf_section_from_toml(table)
    except ValueError as error:
        raise SuiteError(f"[rf] with --models {','.join(options.models)}: {error} (--no-rf skips it)") from None
    console.say(f"the suite's [rf] section analyses the models given: {', '.join(section.models)} (--no-rf skips it)")
    return dataclasses.replace(suite, sections={**sections, "rf": section}, section_tables={**tables, "rf": table})


@contextlib.contextmanager
def _memory_guard(device: torch.device, limit_gib: float | None) -> Iterator[None]:
    """On the CPU, the address-space cap of bench.measure.memguard while the cases run (``limit_gib``
    GiB of headroom, or the default); on CUDA nothing."""
    from bench.measure.memguard import address_space_limit, headroom_for

    if device.type != "cpu" or limit_gib == 0:
        yield
        return
    with address_space_limit(headroom_for(limit_gib)):
        yield


#: The lists of ``convbench optim`` as its suite.toml names them, by the case field each sets.
OPTIM_LISTS = {"models": "model", "optimizers": "optimizer", "precision": "precision"}


def optim(
    options: OptimOptions, destinations: Destinations = DESTINATIONS, console: Console | None = None
) -> RunResult:
    """``convbench optim``: time ``optimizer.step()`` alone for each optimizer on each model's
    parameters, measure the device's memory bandwidth right before each case, and write a run
    folder (records, bandwidth.json by case, report with the roofline figure) and a history
    entry."""
    import models
    import optimizers
    from bench.kinds.optimizer_step import runner as optimizer_step
    from bench.measure import setup
    from bench.measure.bandwidth import check_array_bytes, measure_bandwidth
    from bench.measure.env import collect_env
    from bench.measure.machine import machine_identity
    from bench.toml_writer import dumps

    console = console or Console("optim")
    # Everything that can be wrong with the input is found before the run folder exists.
    device = setup.resolve_device(options.device)
    for name in options.models:
        models.spec(name)
    optimizer_names = optimizers.available() if options.optimizers == "all" else options.optimizers
    protocol = {"steps": options.steps, "warmup": options.warmup, "repeats": options.repeats}
    try:
        cases = optimizer_step.cases(options.models, optimizer_names, options.precision, **protocol)
    except ValueError as error:
        raise setup.SetupError(str(error)) from None
    if options.bandwidth_mib:
        try:
            check_array_bytes(device, options.bandwidth_mib * 2**20)
        except ValueError as error:
            raise setup.SetupError(f"--bandwidth-mib {options.bandwidth_mib}: {error}") from None
    chosen = {key: list(dict.fromkeys(getattr(case, field) for case in cases)) for key, field in OPTIM_LISTS.items()}
    configuration = {
        "suite": {"name": "optim", "kind": optimizer_step.KIND, "device": str(device), **protocol},
        "optim": chosen,
    }
    env = collect_env()
    machine = machine_identity(device, env, destinations.machine)

    session = RunSession(
        "optim", destinations, "optim", dumps(configuration), env, [case.case_id for case in cases], machine,
        console=console,
    )  # fmt: skip
    with session:
        array_bytes = options.bandwidth_mib * 2**20 if options.bandwidth_mib else None
        measured: dict[str, dict] = {}

        def measure(case: optimizer_step.OptimizerStepCase) -> object:
            # The limit is measured right before each case, so both see the machine in the
            # same state (a shared machine's bandwidth drifts by tens of %).
            bandwidth = measure_bandwidth(device, array_bytes)
            measured[case.case_id] = bandwidth.to_dict()
            session.writer.write("bandwidth.json", json.dumps(measured, indent=2) + "\n")
            return optimizer_step.run_case(
                case,
                device,
                bandwidth,
                run_id=session.run_id,
                suite="optim",
                env=env,
                device_name=setup.device_name(device, env),
            )

        for case in cases:
            session.record(case.case_id, lambda case=case: measure(case))
    return RunResult(session.path, session.exit_status)


def train(
    options: TrainOptions, destinations: Destinations = DESTINATIONS, console: Console | None = None
) -> RunResult:
    """``convbench train``: train every (model, recipe, seed) of a training suite; write
    records, learning curves (``curves.jsonl``), the report and a history entry."""
    from bench.kinds.training import datasets, loop
    from bench.kinds.training.curves import append_curve
    from bench.kinds.training.report import summary_frame
    from bench.kinds.training.suite import load_train_suite
    from bench.measure import setup
    from bench.measure.env import collect_env
    from bench.measure.machine import machine_identity

    console = console or Console("train")
    # Everything that can be wrong with the input is found before the run folder exists.
    suite = load_train_suite(options.suite)
    overrides = {
        key: getattr(options, key) for key in ("device", "models", "recipes", "seeds", "epochs", "steps", "batch_size")
    }
    overrides["target_accuracy"] = options.target
    overrides["stop_at_target"] = True if options.stop_at_target else None
    suite = suite.override(**{key: value for key, value in overrides.items() if value is not None})
    device = setup.resolve_device(suite.device)
    suite = suite.override(device=str(device)).resolve(device.type)
    cases = suite.cases(limits=not options.no_limits)
    setup.check_cases(cases, device)
    dataset = datasets.load(suite.dataset, options.data_root or "data", device, options.download)
    env = collect_env()
    machine = machine_identity(device, env, destinations.machine)

    session = RunSession(
        "train", destinations, suite.name, suite.to_toml(), env, [case.case_id for case in cases], machine,
        summary=summary_frame, console=console,
    )  # fmt: skip
    with session:

        def measure(case: object) -> object:
            record, curve = loop.run_training_case(
                case, dataset, run_id=session.run_id, suite=suite.name, device=device, env=env
            )
            append_curve(session.path, curve)
            return record

        for case in cases:
            session.record(case.case_id, lambda case=case: measure(case))
    return RunResult(session.path, session.exit_status)
