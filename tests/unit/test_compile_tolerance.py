"""compile's tolerance table: which metric breaks which bound, named with its limit."""

from __future__ import annotations

import math

import pytest

from inferpack.compile.tolerance import TOLERANCES, AccuracyLossError, violations

FP32_CLEAN = {"relative_l2": 1e-6, "cosine_similarity": 1.0, "top1_agreement": None}


def test_fp32_within_tolerance_has_no_violation() -> None:
    assert violations(FP32_CLEAN, "fp32") == []


def test_fp32_relative_l2_above_limit_is_named_with_its_bound() -> None:
    found = violations({**FP32_CLEAN, "relative_l2": 2e-4}, "fp32")
    assert [v.bound.metric for v in found] == ["relative_l2"]
    assert found[0].describe() == "relative_l2 = 0.0002 (tolerance: relative_l2 <= 0.0001)"


def test_cosine_is_a_lower_bound() -> None:
    found = violations({**FP32_CLEAN, "cosine_similarity": 0.9999}, "fp32")
    assert [(v.bound.metric, v.bound.at_least) for v in found] == [("cosine_similarity", True)]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_allows_rounding_but_not_changed_predictions(precision: str) -> None:
    assert violations({"relative_l2": 1e-2, "top1_agreement": 1.0}, precision) == []
    found = violations({"relative_l2": 1e-2, "top1_agreement": 0.98}, precision)
    assert [v.bound.metric for v in found] == ["top1_agreement"]


def test_metric_the_model_lacks_is_not_checked() -> None:
    assert violations({"relative_l2": 1e-3, "top1_agreement": None}, "bf16") == []


def test_nan_breaks_every_bound_it_meets() -> None:
    found = violations({"relative_l2": math.nan, "cosine_similarity": math.nan}, "fp32")
    assert len(found) == 2


def test_every_precision_has_a_tolerance() -> None:
    assert set(TOLERANCES) == {"fp32", "bf16", "fp16"}


def test_refusal_message_names_metric_tolerance_and_the_way_out() -> None:
    message = str(AccuracyLossError(violations({"relative_l2": 0.5}, "fp16")))
    assert "relative_l2 = 0.5" in message
    assert "relative_l2 <= 0.02" in message
    assert "--allow-accuracy-loss" in message
