"""GEM metrics on hand-computed cases, the table function against the per-domain loops, correlations against
scipy and the loop references, and NaN-with-a-reason for degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from gem.metrics import (
    brittleness,
    brittleness_vs_intensity,
    correlation_ci,
    cross_domain_transfer_ratio,
    domain_specialization_index,
    forgetting,
    forgetting_reduction,
    generalization_gap,
    per_domain_macro_f1,
    per_domain_perplexity,
    specialisation_table,
)
from gem.reference import reference_pearson, reference_spearman, reference_specialisation_rows
from shared.errors import DataError

GEN = {"med": 0.60, "law": 0.50, "fin": 0.40}
SPEC_MED = {"med": 0.75, "law": 0.44, "fin": 0.34}  # specialised on med: +0.15 there, -0.06 on each other


def test_dsi_on_hand_computed_cases() -> None:
    assert domain_specialization_index(0.75, 0.60).value == pytest.approx(0.25)
    assert domain_specialization_index(20.0, 25.0, higher_is_better=False).value == pytest.approx(0.2)  # PPL
    assert domain_specialization_index(30.0, 25.0, higher_is_better=False).value == pytest.approx(-0.2)
    zero = domain_specialization_index(0.5, 0.0)
    assert math.isnan(zero.value) and "0" in zero.reason


def test_generalization_gap_on_a_hand_computed_case() -> None:
    assert generalization_gap(SPEC_MED, "med").value == pytest.approx(0.75 - (0.44 + 0.34) / 2)
    assert generalization_gap(GEN, "med").value == pytest.approx(0.60 - 0.45)
    alone = generalization_gap({"med": 0.7}, "med")
    assert math.isnan(alone.value) and "off-target" in alone.reason


def test_cdtr_on_hand_computed_cases() -> None:
    assert cross_domain_transfer_ratio(SPEC_MED, GEN, "med").value == pytest.approx(-0.06 / 0.15)
    positive = {"med": 0.70, "law": 0.55, "fin": 0.45}  # gains everywhere: positive transfer
    assert cross_domain_transfer_ratio(positive, GEN, "med").value == pytest.approx(0.05 / 0.10)
    same = cross_domain_transfer_ratio({**SPEC_MED, "med": 0.60}, GEN, "med")
    assert math.isnan(same.value) and "zero on-target change" in same.reason
    with pytest.raises(DataError, match="fin"):
        cross_domain_transfer_ratio(SPEC_MED, {"med": 0.6, "law": 0.5}, "med")


def test_forgetting_and_its_reduction_on_hand_computed_cases() -> None:
    assert forgetting(SPEC_MED, GEN, "med").value == pytest.approx(0.06)
    ppl_gen, ppl_spec = {"med": 20.0, "law": 10.0, "fin": 40.0}, {"med": 15.0, "law": 12.0, "fin": 44.0}
    assert forgetting(ppl_spec, ppl_gen, "med", higher_is_better=False).value == pytest.approx(
        (0.2 + 0.1) / 2
    )
    assert forgetting_reduction(0.10, 0.057).value == pytest.approx(0.43)  # the paper's claim would read 0.43
    assert forgetting_reduction(0.10, 0.12).value == pytest.approx(-0.2)  # distillation made it worse
    none = forgetting_reduction(-0.01, 0.0)
    assert math.isnan(none.value) and "forgot nothing" in none.reason
    assert math.isnan(forgetting({"med": 0.7, "law": float("nan")}, GEN, "med").value)


def test_specialisation_table_equals_the_per_domain_loops() -> None:
    rng = np.random.default_rng(0)
    domains = ["med", "law", "fin", "stem", "chat"]
    models = ["gen", *[f"spec_{d}" for d in domains]]
    f1 = pd.DataFrame(rng.uniform(0.2, 0.9, (len(models), len(domains))), index=models, columns=domains)
    ppl = pd.DataFrame(rng.uniform(5, 50, (len(models), len(domains))), index=models, columns=domains)
    targets = {f"spec_{d}": d for d in domains}
    table = specialisation_table(f1, "gen", targets, ppl)
    ref = reference_specialisation_rows(f1.to_dict(orient="index"), "gen", targets)
    for model, row in ref.items():
        for key, value in row.items():
            assert table.loc[model, key] == pytest.approx(value), (model, key)
    assert list(table["target"]) == domains and (table["notes"] == "").all()
    t = targets["spec_med"]
    want = (ppl.loc["gen", t] - ppl.loc["spec_med", t]) / ppl.loc["gen", t]
    assert table.loc["spec_med", "dsi_ppl"] == pytest.approx(want)
    # a specialist identical to the generalist on its target: CDTR is NaN and the note says why
    f1.loc["spec_law", "law"] = f1.loc["gen", "law"]
    table = specialisation_table(f1, "gen", targets)
    assert (
        math.isnan(table.loc["spec_law", "cdtr"])
        and "cdtr: zero on-target change" in table.loc["spec_law", "notes"]
    )
    with pytest.raises(DataError, match="spec_x"):
        specialisation_table(f1, "gen", {"spec_x": "med"})
    with pytest.raises(DataError, match="legal"):
        specialisation_table(f1, "gen", {"spec_law": "legal"})


def test_brittleness_on_a_hand_computed_case() -> None:
    base = {"med": 0.8, "law": 0.5}
    assert brittleness(base, {"med": 0.6, "law": 0.45}).value == pytest.approx((0.25 + 0.1) / 2)
    assert brittleness({"med": 10.0}, {"med": 12.0}, higher_is_better=False).value == pytest.approx(0.2)
    assert math.isnan(brittleness({"med": 0.0}, {"med": 0.1}).value)


def test_correlations_equal_scipy_and_the_loop_references() -> None:
    x = [0.0, 0.2, 0.35, 0.5, 0.7, 0.9, 0.95]
    y = [0.01, 0.05, 0.04, 0.12, 0.2, 0.33, 0.31]
    pearson = correlation_ci(x, y, method="pearson")
    assert pearson.r == pytest.approx(reference_pearson(x, y))
    ci = stats.pearsonr(x, y).confidence_interval(0.95)  # scipy's Fisher-z interval
    assert (pearson.low, pearson.high) == pytest.approx((ci.low, ci.high))
    assert pearson.p_value == pytest.approx(stats.pearsonr(x, y).pvalue) and pearson.n == 7
    spearman = correlation_ci(x, y, method="spearman")
    assert spearman.r == pytest.approx(reference_spearman(x, y))
    z, se = math.atanh(spearman.r), math.sqrt(1.06 / 4)
    assert spearman.low == pytest.approx(math.tanh(z - 1.959964 * se), abs=1e-6)
    ties = [1.0, 2.0, 2.0, 3.0, 5.0]
    assert correlation_ci(ties, [3.0, 1.0, 4.0, 4.0, 9.0]).r == pytest.approx(
        reference_spearman(ties, [3, 1, 4, 4, 9])
    )


def test_bootstrap_interval_is_seeded_and_brackets_r() -> None:
    rng = np.random.default_rng(1)
    x = np.linspace(0, 1, 12)
    y = x + rng.normal(0, 0.2, 12)
    a = correlation_ci(x, y, method="pearson", ci="bootstrap", n_boot=500, seed=3)
    b = correlation_ci(x, y, method="pearson", ci="bootstrap", n_boot=500, seed=3)
    c = correlation_ci(x, y, method="pearson", ci="bootstrap", n_boot=500, seed=4)
    assert (a.low, a.high) == (b.low, b.high) != (c.low, c.high)
    assert -1 <= a.low < a.r < a.high <= 1


def test_degenerate_correlations_are_nan_with_a_reason() -> None:
    two = correlation_ci([0.1, 0.2], [0.3, 0.5])
    assert math.isnan(two.r) and "fewer than 3" in two.reason
    three = correlation_ci([0.1, 0.2, 0.4], [0.3, 0.5, 0.4], method="pearson")
    assert not math.isnan(three.r) and math.isnan(three.low) and "n >= 4" in three.reason
    flat = correlation_ci([0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5])
    assert math.isnan(flat.r) and "constant" in flat.reason
    nan_pairs = correlation_ci([0.1, 0.2, float("nan"), 0.4], [0.3, 0.1, 0.2, 0.6])
    assert nan_pairs.n == 3
    perfect = correlation_ci([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], method="pearson")
    assert perfect.r == pytest.approx(1.0) and perfect.high == pytest.approx(1.0) and perfect.low > 0.9
    with pytest.raises(DataError):
        correlation_ci([1, 2, 3], [1, 2])


def test_brittleness_vs_intensity_on_a_model_by_domain_table() -> None:
    scores = pd.DataFrame(
        {"med": [0.8, 0.78, 0.7, 0.5, 0.6], "law": [0.6, 0.6, 0.5, 0.3, 0.5]},
        index=["base", "int8", "prune50", "prune90", "narrow"],
    )
    base_of = {v: "base" for v in ["int8", "prune50", "prune90", "narrow"]}
    intensity = {"int8": 0.55, "prune50": 0.4, "prune90": 0.73, "narrow": 0.6}
    table, corr = brittleness_vs_intensity(scores, base_of, intensity, method="pearson")
    assert table.loc["prune90", "brittleness"] == pytest.approx(((0.8 - 0.5) / 0.8 + (0.6 - 0.3) / 0.6) / 2)
    assert table.loc["int8", "intensity"] == 0.55
    want = reference_pearson(list(table["intensity"]), list(table["brittleness"]))
    assert corr.r == pytest.approx(want) and corr.n == 4
    with pytest.raises(DataError, match="intensity"):
        brittleness_vs_intensity(scores, {"int8": "base", "narrow": "base"}, {"int8": 0.5})


def test_per_domain_f1_and_perplexity_use_the_shared_metrics() -> None:
    labels = [0, 1, 1, 0, 2, 2, 1, 0]
    preds = [0, 1, 0, 0, 2, 1, 1, 1]
    domains = ["a", "a", "a", "a", "b", "b", "b", "b"]
    got = per_domain_macro_f1(labels, preds, domains)
    assert got["a"] == pytest.approx(f1_score(labels[:4], preds[:4], average="macro"))
    assert got["b"] == pytest.approx(f1_score(labels[4:], preds[4:], average="macro", zero_division=0))
    assert per_domain_perplexity({"a": 4 * math.log(3.0)}, {"a": 4}) == {"a": pytest.approx(3.0)}
    with pytest.raises(DataError):
        per_domain_macro_f1([0, 1], [0], ["a", "a"])
