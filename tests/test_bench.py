"""The bench compares like with like: same scores, same first step, the scorer's own inputs.

Nothing here is timed and no Ray is started: the helpers the bench measures with run at tiny sizes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import pytest
import torch

from smsweep import bench

TINY = bench.Sizes(
    encoder_depth=3,
    decoder_channels=(16, 8, 4),
    image_size=32,
    batch_size=3,
    samples=3,
    chunk_size=4,  # 9 variants: chunks of 4, so the chunking is exercised
    seed=7,
)


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return bench.bench_model(TINY)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return bench.bench_images(TINY)


def test_bench_inputs_are_deterministic_images(images):
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert float(images.std()) > 0.01  # real scenes, not a constant
    torch.testing.assert_close(bench.bench_images(TINY), images, rtol=0, atol=0)
    first, second = bench.bench_model(TINY), bench.bench_model(TINY)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_literal_and_vectorized_give_the_same_scores(model, images):
    fast = bench.vectorized_scores(model, images, TINY)
    slow = bench.literal_scores(model, images, TINY)
    assert fast.shape == slow.shape == (3, 4, 4)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    assert float(fast.std()) > 0  # the scores carry information, not a constant


def _recording(model: torch.nn.Module):
    """A forward pre-hook that keeps every input batch the model sees."""
    seen: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    return seen, handle


def test_forward_floor_runs_exactly_the_scorers_b_times_k_inputs(model, images):
    inputs, masks = bench.masked_variants(images, TINY)
    total = TINY.batch_size * TINY.samples
    assert inputs.shape == (total, 3, 32, 32) and masks.shape == (total, 1, 32, 32)

    seen, handle = _recording(model)
    try:
        forwarded = bench.forward_floor(model, inputs, masks, TINY.chunk_size)
    finally:
        handle.remove()
    assert forwarded == total == sum(batch.shape[0] for batch in seen)
    assert [batch.shape[0] for batch in seen] == [4, 4, 1]  # chunk_size at a time
    assert model.training, "the floor restores the model's mode"

    seen, handle = _recording(model)
    try:
        bench.vectorized_scores(model, images, TINY)
    finally:
        handle.remove()
    torch.testing.assert_close(torch.cat(seen), inputs, rtol=0, atol=0)  # the scorer's variants

    seen, handle = _recording(model)
    try:
        assert bench.literal_forwards(model, inputs, masks) == total
    finally:
        handle.remove()
    assert [batch.shape[0] for batch in seen] == [1] * total


def test_bare_loop_and_smsweep_step_take_the_same_first_step():
    parts = bench.train_parts(TINY)
    ours, bare = bench.bench_model(TINY), bench.bench_model(TINY)
    ours.train()
    bare.train()
    ours_optimizer, bare_optimizer = bench.make_optimizer(ours), bench.make_optimizer(bare)

    pixel_mask = bench.fixed_pixel_mask(parts, TINY.seed)
    assert pixel_mask.shape == (3, 1, 32, 32)
    assert pixel_mask.float().mean().item() == pytest.approx(0.5)  # ratio 0.5 of 16 patches

    generator = torch.Generator().manual_seed(TINY.seed)
    (ours_loss,) = bench.smsweep_steps(ours, ours_optimizer, parts, generator, steps=1)
    (bare_loss,) = bench.bare_steps(bare, bare_optimizer, parts, pixel_mask, steps=1)
    assert math.isfinite(ours_loss) and ours_loss > 0
    assert ours_loss == pytest.approx(float(bare_loss), abs=1e-6)
    for (name, a), b in zip(ours.state_dict().items(), bare.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=f"{name} differs after a step")


def synthetic_results(**changes) -> dict:
    results = {
        "scorer_vs_literal": 21.5,
        "scorer_vs_forward": 1.05,
        "train_step_vs_bare": 0.97,
        "actors_2_vs_1": 1.7,
        "trainer_fits_per_trial": 1,
        "scoring_ms_per_image": 12.5,
        "peak_rss_mb": 900.0,
        "trial_fixed_overhead_s": 14.2,
        "trial_fixed_overhead_in_process_s": 1.1,
        "partition0_cache_saving": 0.93,
        "device": "cpu: Example CPU, 2 threads",
        "torch_threads": 2,
        "sizes": TINY.as_dict(),
        "scorer_seconds": {"vectorized": 0.2},
    }
    return results | changes


def test_json_is_one_line_with_every_required_key():
    line = bench.format_json(synthetic_results())
    assert "\n" not in line
    parsed = json.loads(line)
    assert set(bench.REQUIRED_KEYS) <= set(parsed)
    assert list(parsed)[: len(bench.REQUIRED_KEYS)] == list(bench.REQUIRED_KEYS)
    assert parsed["sizes"]["decoder_channels"] == [16, 8, 4]
    assert parsed["scorer_seconds"] == {"vectorized": 0.2}
    assert parsed["all_passed"] is True
    assert parsed["passed"] == dict.fromkeys(bench.TARGETS, True)


def test_json_marks_misses_and_has_no_nan():
    parsed = json.loads(
        bench.format_json(synthetic_results(scorer_vs_literal=2.5, actors_2_vs_1=float("nan")))
    )
    assert parsed["passed"]["scorer_vs_literal"] is False
    assert parsed["actors_2_vs_1"] is None and parsed["passed"]["actors_2_vs_1"] is None
    assert parsed["all_passed"] is False


def test_json_refuses_results_without_a_required_key():
    results = synthetic_results()
    del results["trainer_fits_per_trial"]
    with pytest.raises(ValueError, match="trainer_fits_per_trial"):
        bench.format_json(results)


def test_table_shows_value_target_and_verdict():
    table = bench.format_table(synthetic_results(train_step_vs_bare=0.9))
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    assert rows["train_step_vs_bare"][-2:] == ["0.95", "FAIL"]
    assert rows["scorer_vs_literal"][-1] == "PASS"
    assert rows["trainer_fits_per_trial"][1:] == ["1", "==", "1", "PASS"]
    assert "cpu: Example CPU" in table


def test_cpu_meter_counts_this_process_cpu_time():
    meter = bench.CpuMeter()
    start = time.process_time()
    with meter:
        while time.process_time() - start < 0.2:  # CPU time, whatever the machine's load
            pass
    spent = time.process_time() - start
    if not meter.ok:
        pytest.skip("no /proc on this system")
    assert meter.per_pid[0] == pytest.approx(spent, abs=0.05)
    assert 0.0 < meter.busy([os.getpid()]) <= bench.available_cpus() + 0.1
    assert meter.others() >= 0.0


def test_skip_ray_measures_scorer_and_train_step_and_leaves_ray_keys_null():
    sizes = dataclasses.replace(TINY, train_steps=1, repeats=1)
    results = bench.run_bench(sizes, ray_parts=False)
    assert results["scorer_vs_literal"] > 0 and results["train_step_vs_bare"] > 0
    parsed = json.loads(bench.format_json(results))
    for key in bench.RAY_KEYS:
        assert parsed[key] is None
    assert parsed["passed"]["actors_2_vs_1"] is None and parsed["all_passed"] is False
    assert parsed["sizes"]["image_size"] == 32
    assert "not measured: the actors and the trial" in bench.format_table(results)


@pytest.mark.parametrize(
    ("flag", "value"), [("--image-size", "70"), ("--image-size", "16"), ("--batch-size", "0")]
)
def test_bench_rejects_sizes_it_cannot_build_with_exit_2(flag, value, capsys):
    from smsweep.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["bench", flag, value])
    assert exited.value.code == 2
    assert f"argument {flag}: expected an integer >=" in capsys.readouterr().err


def test_on_a_cpu_the_literal_target_is_a_share_of_the_batching_bound():
    cpu = synthetic_results(scorer_vs_literal=3.4, literal_forward_bound=3.68)
    parsed = json.loads(bench.format_json(cpu))
    assert parsed["passed"]["scorer_vs_literal"] is True  # 3.4 >= 0.9 x 3.68 = 3.31
    assert parsed["targets"]["scorer_vs_literal"].startswith(">= 0.9 x literal_forward_bound")
    slow = json.loads(bench.format_json(cpu | {"scorer_vs_literal": 3.0}))
    assert slow["passed"]["scorer_vs_literal"] is False
    gpu = cpu | {"device": "cuda: NVIDIA H100", "scorer_vs_literal": 19.0}
    assert json.loads(bench.format_json(gpu))["passed"]["scorer_vs_literal"] is False
    assert "3.31" in bench.format_table(cpu)
