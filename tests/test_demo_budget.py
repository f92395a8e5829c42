"""The demo's sizing: the measured speed decides the cache and the seeds, within the budget."""

from __future__ import annotations

from tiny_backbones import save_backbone

from co_settle_hf.demo.budget import MAX_CACHE_PAIRS, MIN_CACHE_PAIRS, Speed, measure_speed, plan_run

EVAL_IMAGES = (80, 440)


def test_a_fast_machine_gets_the_largest_cache_and_two_seeds():
    plan = plan_run(600, 20, Speed(0.05, 0.2, 0.1, 0.05), EVAL_IMAGES, steps=300, precision="bf16")
    assert plan.cache_pairs == MAX_CACHE_PAIRS and plan.seeds == 2 and not plan.notes
    assert plan.estimates["total"] <= 600


def test_a_slow_machine_gets_a_smaller_cache_that_still_fits():
    plan = plan_run(600, 60, Speed(0.3, 0.6, 0.3, 0.15), EVAL_IMAGES, steps=300, precision="fp32")
    assert MIN_CACHE_PAIRS <= plan.cache_pairs < MAX_CACHE_PAIRS and plan.seeds == 1
    assert 0.9 * 600 <= plan.estimates["total"] <= 600  # the budget is spent, not exceeded
    slower = plan_run(600, 60, Speed(0.4, 0.8, 0.4, 0.2), EVAL_IMAGES, steps=300, precision="fp32")
    assert slower.cache_pairs < plan.cache_pairs


def test_a_budget_too_small_takes_the_minimum_and_says_so():
    plan = plan_run(120, 60, Speed(0.3, 0.6, 0.3, 0.15), EVAL_IMAGES, steps=300, precision="fp32")
    assert plan.cache_pairs == MIN_CACHE_PAIRS and plan.seeds == 1
    assert "exceed --time-budget" in plan.notes[0]
    fixed = plan_run(120, 60, Speed(0.3, 0.6, 0.3, 0.15), EVAL_IMAGES, steps=300, precision="fp32", cache_pairs=16, seeds=2)
    assert (fixed.cache_pairs, fixed.seeds) == (16, 2)  # what the user fixed is kept


def test_speed_is_measured_on_the_backbone(tmp_path):
    speed = measure_speed(str(save_backbone("vit", tmp_path / "vit")), "fp32", 64, (64, 112), batch=2)
    assert 0 < speed.eval_small_image_s < speed.eval_image_s * 4 and speed.train_image_s > 0 and speed.step_s > 0
