"""Every exception class of the project survives `copy.copy` and `pickle`: Ray and Tune copy and
pickle a trial's exception on its way to the driver, and one that cannot be rebuilt hides the real
cause behind a TypeError."""

from __future__ import annotations

import copy
import importlib
import inspect
import pickle
import pkgutil

import smsweep
from smsweep import errors, faults
from smsweep.engines import claim, tracking, train
from smsweep.engines.store import Location
from smsweep.method import pretrain


def project_exceptions() -> set[type[BaseException]]:
    found = set()
    for module in pkgutil.walk_packages(smsweep.__path__, "smsweep."):
        if module.name.endswith("__main__"):
            continue
        for _, value in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(value, BaseException) and value.__module__.startswith("smsweep"):
                found.add(value)
    return found


def examples() -> list[BaseException]:
    holder = claim.Holder(host="node-1", pid=123, started=1.0, token="t", heartbeat=2.0)
    return [
        errors.SpecError("masking.ratio must be in (0, 1); e.g. --set masking.ratio=0.6"),
        errors.TrackingUnavailable("MLflow at http://host:5000 does not answer"),
        faults.InjectedFault("test-only fault: raise_after_partition=0"),
        pretrain.NonFiniteLoss("pretraining loss is nan"),
        tracking.LogFailed("MLflow did not take 3 entries"),
        claim.Held(Location.of("/runs/tiny"), holder, also="choose another --name"),
        train.TrialFailed("trial_1", pretrain.NonFiniteLoss("pretraining loss is nan")),
    ]


def test_every_exception_class_of_the_project_is_covered_here():
    assert {type(error) for error in examples()} == project_exceptions()


def test_every_exception_copies_and_pickles_with_its_message_and_cause():
    for error in examples():
        for again in (copy.copy(error), pickle.loads(pickle.dumps(error))):
            assert type(again) is type(error)
            assert str(again) == str(error)
            assert repr(again.args) == repr(error.args)
    failed = pickle.loads(pickle.dumps(examples()[-1]))
    assert failed.non_finite and str(failed.cause) == "pretraining loss is nan"
    held = pickle.loads(pickle.dumps(examples()[-2]))
    assert held.holder.pid == 123 and "choose another --name" in str(held)


def test_a_failed_trials_reason_is_one_line_and_names_the_real_cause():
    from smsweep.report.console import leaderboard

    worker = ValueError("checkpoint /runs/x was written for a different trial config\nmore")
    failed = pickle.loads(pickle.dumps(train.TrialFailed("trial_1", worker)))
    reason = errors.one_line(failed)
    assert reason == "ValueError: checkpoint /runs/x was written for a different trial config"
    row = {"trial_id": "trial_1", "status": "ERROR", "params": {}, "reason": reason}
    assert f"failed: {reason}" in leaderboard([row], "miou")
