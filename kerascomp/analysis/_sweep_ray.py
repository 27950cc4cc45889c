"""A distillation sweep's runs as Ray Tune trials: on this machine, or on a cluster that ``ray start`` made.

One trial per grid point and one per scratch twin (one per student architecture). What the trials share
goes into Ray's object store once (``tune.with_parameters``): the data, the teacher's ``.keras`` bytes and
its cached outputs, so no trial re-runs the teacher over the splits. Each trial reports validation accuracy
after every epoch, so a scheduler such as ASHA can stop weak trials early. Resume is Ray Tune's own: the
experiment under the sweep's folder (named by the runs it holds) is restored with ``Tuner.restore``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from kerascomp.backend import keras
from kerascomp.compress.distill import summarise
from kerascomp.errors import ConfigError
from kerascomp.saving import load_model, save_model
from kerascomp.training import train
from kerascomp.training.distillation import DistillConfig
from kerascomp.training.distribute import limit_threads

__all__ = ["SCHEDULERS", "TRIAL_RETRIES", "run_trials"]

SCHEDULERS = ("none", "asha")
TRIAL_RETRIES = 2  # a trial whose process dies (a killed worker, a lost node) starts over this many times
METRIC = "val_accuracy"


def run_trials(runs: list[dict], *, teacher, data, student: str, train_config, cache: dict | None,
               storage: Path, address: str | None, scheduler: str, cpus_per_trial: float, gpus_per_trial: float,
               progress: Callable[[str], None] | None, retries: int = TRIAL_RETRIES) -> dict[str, dict]:
    """Run every spec of ``runs`` (``{"kind": "scratch"|"distill", "key", "args", "seed", "distill"?}``) as a trial.

    A trial whose process dies is started again, up to ``retries`` times (Ray Tune's ``FailureConfig``); it
    starts over from its seed, so its result is the one an undisturbed trial gives.

    Returns ``{key: summary}`` for finished trials and ``{key: {"stopped": ...}}`` for trials a scheduler
    stopped early (their last validation accuracy and epoch).
    """
    ray, tune = _ray()
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler: use one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    with _connected(ray, address):
        trainable = tune.with_resources(
            tune.with_parameters(_trial, teacher_file=_keras_bytes(teacher), data=data, student=student,
                                 train_config=train_config, cache=cache, threads=max(1, int(cpus_per_trial))),
            {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        name = "sweep-" + hashlib.sha1(json.dumps(runs, sort_keys=True, default=str).encode()).hexdigest()[:12]
        experiment = storage.resolve() / name  # the same runs: an interrupted experiment to restore
        if tune.Tuner.can_restore(str(experiment)):
            if progress:
                progress(f"resuming the Ray Tune experiment in {experiment}")
            tuner = tune.Tuner.restore(str(experiment), trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(trainable, param_space={"run": tune.grid_search(runs)},
                               tune_config=tune.TuneConfig(scheduler=_scheduler(scheduler, train_config.epochs)),
                               run_config=tune.RunConfig(name=name, storage_path=str(storage.resolve()),
                                                         verbose=1 if progress else 0,
                                                         failure_config=tune.FailureConfig(max_failures=retries)))
        results = tuner.fit()
    outcome = {}
    for result in results:
        spec, metrics = result.config["run"], result.metrics or {}
        if "summary" in metrics:
            outcome[spec["key"]] = metrics["summary"]
        elif result.error is None:
            outcome[spec["key"]] = {"stopped": {METRIC: metrics.get(METRIC), "epoch": metrics.get("epoch")}}
        else:
            why = (str(result.error).strip().splitlines() or ["no message"])[-1]
            raise ConfigError(f"Ray Tune trial {spec['kind']} {spec['key']} failed: {why}")
    return outcome


def _ray():
    """Ray and Ray Tune, or one line saying how to get them."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ConfigError('--backend ray needs Ray Tune: pip install "kerascomp[ray]"') from None
    return ray, tune


@contextlib.contextmanager
def _connected(ray, address: str | None):
    """Join the cluster at ``address`` (``auto``: the one on this machine), or start a local Ray for the sweep."""
    if ray.is_initialized():
        yield
        return
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             **({} if address else {"num_cpus": os.cpu_count()}))
    try:
        yield
    finally:
        ray.shutdown()


def _scheduler(name: str, epochs: int):
    from ray.tune.schedulers import ASHAScheduler

    if name == "none":
        return None
    # max_t is one past the last epoch: the summary comes in a report after it, and ASHA stops a trial at max_t
    return ASHAScheduler(metric=METRIC, mode="max", max_t=epochs + 1, grace_period=max(1, epochs // 4),
                         time_attr="epoch")


def _keras_bytes(model) -> bytes:
    """The teacher as ``.keras`` bytes: a cluster's workers share no file system with the driver."""
    with tempfile.TemporaryDirectory() as work:
        return save_model(model, Path(work) / "teacher.keras").read_bytes()


def _trial(config: dict, *, teacher_file: bytes, data, student: str, train_config, cache: dict | None,
           threads: int) -> None:
    """One run in a Ray worker: distil (or train from scratch), report validation accuracy per epoch, then the
    summary the sweep table needs."""
    limit_threads(threads)  # Ray only counts the CPUs it reserved; without this every trial takes every core
    from ray import tune

    spec = config["run"]

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            tune.report({METRIC: float((logs or {}).get(METRIC, 0.0)), "epoch": epoch + 1})

    options = {}
    if spec["kind"] == "distill":
        with tempfile.TemporaryDirectory() as work:
            (Path(work) / "teacher.keras").write_bytes(teacher_file)
            teacher = load_model(Path(work) / "teacher.keras")
        distill = DistillConfig(**spec["distill"])
        options = {"teacher": teacher, "distill": distill, "teacher_outputs": cache if distill.use_cache else None}
    run_config = dataclasses.replace(train_config, verbose=0, seed=spec["seed"])
    _, metrics = train(student, data, run_config, model_args=spec["args"], callbacks=[Report()], **options)
    tune.report({METRIC: metrics["val_accuracy"], "epoch": run_config.epochs + 1, "summary": summarise(metrics)})
