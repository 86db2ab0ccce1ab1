"""GEM's evaluation metrics: DSI, GG, CDTR, forgetting and brittleness vs compression intensity (our definitions).

The paper (arXiv 2503.22698) names the Domain Specialization Index, the Generalization Gap and the Cross-Domain
Transfer Ratio and says they "show strong correlation between model compression intensity and brittleness",
but no formula survives (only the abstract is available; the authors' code computes none of them). The
formulas below are ours; the README's "Definitions (ours)" repeats them. s_m(d) is model m's score on domain d
(macro F1 unless said otherwise), g the generalist, t a specialist's target domain, O = the other domains:

    DSI_F1(m)   = (s_m(t) - s_g(t)) / s_g(t)              relative on-target gain (> 0: specialisation helped)
    DSI_PPL(m)  = (PPL_g(t) - PPL_m(t)) / PPL_g(t)         the same on perplexity (lower is better)
    GG_t(m)     = s_m(t) - mean_{d in O} s_m(d)             in-domain minus mean out-of-domain F1
    CDTR(m)     = mean_{d in O} (s_m(d) - s_g(d)) / (s_m(t) - s_g(t))
                  off-target change per unit of on-target change (< 0: gains on t cost the other domains)
    F_F1(m)     = mean_{d in O} (s_g(d) - s_m(d))           forgetting: mean off-target F1 drop (signed)
    F_PPL(m)    = mean_{d in O} (PPL_m(d) - PPL_g(d)) / PPL_g(d)   mean relative off-target perplexity rise
    R           = 1 - F(distilled) / F(plain fine-tuning)   forgetting reduction (the paper claims 43 %)
    B(c)        = mean_d (s_b(d) - s_c(d)) / s_b(d)         brittleness of compressed variant c of base b
                  (for perplexity: mean_d (PPL_c(d) - PPL_b(d)) / PPL_b(d))
    corr(CI, B) Pearson or Spearman over variants, 95 % CI by Fisher z (SE 1/sqrt(n-3) for Pearson,
                sqrt(1.06/(n-3)) for Spearman, Fieller et al. 1957) or a seeded percentile bootstrap.

Degenerate inputs give NaN with a reason (``Metric.reason``), never an exception: zero on-target change, a
zero baseline score, no off-target domain, fewer than 3 points, a constant series. Per-domain macro F1 and
perplexity come from ``shared.metrics`` (``f1_scores``, ``perplexity``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from shared.errors import DataError
from shared.metrics import f1_scores, perplexity

EPS = 1e-12


class Metric(NamedTuple):
    """A metric value and, when it is NaN, why."""

    value: float
    reason: str = ""


def _nan(reason: str) -> Metric:
    return Metric(float("nan"), reason)


def _score(scores: Mapping[str, float], domain: str, who: str) -> float:
    if domain not in scores:
        raise DataError(f"{who} has no score for domain '{domain}'; it has: {sorted(scores)}")
    return float(scores[domain])


def _nan_in(*values: float) -> bool:
    return any(math.isnan(v) for v in values)


# --------------------------------------------------------------------------------------- per-domain raw


def per_domain_macro_f1(
    labels: Sequence[int], preds: Sequence[int], domains: Sequence[str]
) -> dict[str, float]:
    """Macro F1 of each domain's examples (``shared.metrics.f1_scores``)."""
    labels, preds, domains = np.asarray(labels), np.asarray(preds), np.asarray(domains)
    if not labels.shape == preds.shape == domains.shape:
        raise DataError(
            f"labels {labels.shape}, preds {preds.shape} and domains {domains.shape} differ in length"
        )
    return {
        str(d): f1_scores(labels[domains == d], preds[domains == d])["macro_f1"] for d in np.unique(domains)
    }


def per_domain_perplexity(nll_sums: Mapping[str, float], token_counts: Mapping[str, int]) -> dict[str, float]:
    """exp(summed NLL / tokens) per domain (``shared.metrics.perplexity``)."""
    return {d: perplexity(nll_sums[d], token_counts[d]) for d in nll_sums}


# ------------------------------------------------------------------------------------- specialisation


def domain_specialization_index(spec: float, gen: float, higher_is_better: bool = True) -> Metric:
    """DSI: relative target-domain gain of the specialist over the generalist (positive = better)."""
    if _nan_in(spec, gen):
        return _nan("a score is NaN")
    if abs(gen) < EPS:
        return _nan("the generalist's target score is 0 (relative gain undefined)")
    return Metric((spec - gen) / gen if higher_is_better else (gen - spec) / gen)


def generalization_gap(scores: Mapping[str, float], target: str) -> Metric:
    """GG: score on ``target`` minus the mean score on the other domains (same model)."""
    on = _score(scores, target, "model")
    off = [float(v) for d, v in scores.items() if d != target]
    if not off:
        return _nan("no off-target domain")
    if _nan_in(on, *off):
        return _nan("a score is NaN")
    return Metric(on - float(np.mean(off)))


def cross_domain_transfer_ratio(spec: Mapping[str, float], gen: Mapping[str, float], target: str) -> Metric:
    """CDTR: mean off-target change per unit of on-target change, both relative to the generalist."""
    d_on = _score(spec, target, "specialist") - _score(gen, target, "generalist")
    d_off = [float(spec[d]) - _score(gen, d, "generalist") for d in spec if d != target]
    if not d_off:
        return _nan("no off-target domain")
    if _nan_in(d_on, *d_off):
        return _nan("a score is NaN")
    if abs(d_on) < EPS:
        return _nan("zero on-target change (specialist equals the generalist on its target)")
    return Metric(float(np.mean(d_off)) / d_on)


def forgetting(
    spec: Mapping[str, float], gen: Mapping[str, float], target: str, higher_is_better: bool = True
) -> Metric:
    """Mean off-target drop of F1 (signed, positive = forgotten), or with ``higher_is_better=False`` the mean
    relative rise of perplexity."""
    _score(spec, target, "specialist")
    drops = []
    for d in spec:
        if d == target:
            continue
        s, g = float(spec[d]), _score(gen, d, "generalist")
        if higher_is_better:
            drops.append(g - s)
        else:
            if abs(g) < EPS:
                return _nan(f"the generalist's perplexity on '{d}' is 0")
            drops.append((s - g) / g)
    if not drops:
        return _nan("no off-target domain")
    if _nan_in(*drops):
        return _nan("a score is NaN")
    return Metric(float(np.mean(drops)))


def forgetting_reduction(plain: float, distilled: float) -> Metric:
    """R = 1 - F_distilled / F_plain: the share of plain fine-tuning's forgetting that distillation avoids."""
    if _nan_in(plain, distilled):
        return _nan("a forgetting value is NaN")
    if plain <= EPS:
        return _nan("plain fine-tuning forgot nothing (F <= 0), so there is nothing to reduce")
    return Metric(1.0 - distilled / plain)


def specialisation_table(
    f1: pd.DataFrame,
    generalist: str,
    targets: Mapping[str, str],
    ppl: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per specialist from (model x domain) score tables.

    ``f1`` (and ``ppl``) have one row per model (index = model name) and one column per domain;
    ``targets`` maps each specialist to its target domain. Columns: target, dsi_f1, gg, gg_generalist,
    cdtr, forgetting_f1 (and dsi_ppl, forgetting_ppl with ``ppl``), notes (reasons for NaNs).
    """
    for table, name in ((f1, "f1"), (ppl, "ppl")):
        if table is None:
            continue
        missing = [m for m in [generalist, *targets] if m not in table.index]
        if missing:
            raise DataError(f"the {name} table has no row for {missing}; rows: {list(table.index)}")
        bad = [t for t in targets.values() if t not in table.columns]
        if bad:
            raise DataError(
                f"target domains {bad} are not columns of the {name} table: {list(table.columns)}"
            )
    gen_f1 = f1.loc[generalist].to_dict()
    rows = []
    for model, t in targets.items():
        spec_f1 = f1.loc[model].to_dict()
        values = {
            "dsi_f1": domain_specialization_index(spec_f1[t], gen_f1[t]),
            "gg": generalization_gap(spec_f1, t),
            "gg_generalist": generalization_gap(gen_f1, t),
            "cdtr": cross_domain_transfer_ratio(spec_f1, gen_f1, t),
            "forgetting_f1": forgetting(spec_f1, gen_f1, t),
        }
        if ppl is not None:
            spec_p, gen_p = ppl.loc[model].to_dict(), ppl.loc[generalist].to_dict()
            values["dsi_ppl"] = domain_specialization_index(spec_p[t], gen_p[t], higher_is_better=False)
            values["forgetting_ppl"] = forgetting(spec_p, gen_p, t, higher_is_better=False)
        notes = "; ".join(f"{k}: {v.reason}" for k, v in values.items() if v.reason)
        rows.append({"model": model, "target": t, **{k: v.value for k, v in values.items()}, "notes": notes})
    return pd.DataFrame(rows).set_index("model")


# ------------------------------------------------------------------------------------- brittleness


def brittleness(
    base: Mapping[str, float], variant: Mapping[str, float], higher_is_better: bool = True
) -> Metric:
    """Mean relative degradation over domains of a compressed variant against its uncompressed base."""
    drops = []
    for d, b in base.items():
        v = _score(variant, d, "variant")
        if abs(b) < EPS:
            return _nan(f"the base score on '{d}' is 0 (relative drop undefined)")
        drops.append((b - v) / b if higher_is_better else (v - b) / b)
    if not drops:
        return _nan("no domain")
    if _nan_in(*drops):
        return _nan("a score is NaN")
    return Metric(float(np.mean(drops)))


@dataclass
class Correlation:
    """A correlation with its confidence interval.

    Attributes:
        r: Pearson r or Spearman rho (NaN when undefined)
        low: lower end of the confidence interval
        high: upper end of the confidence interval
        p_value: two-sided p-value of r = 0 (scipy.stats)
        n: number of points
        method: pearson or spearman
        ci_method: fisher or bootstrap
        reason: why r or the interval is NaN ("" when defined)
    """

    r: float
    low: float
    high: float
    p_value: float
    n: int
    method: str
    ci_method: str
    reason: str = ""


def _corr(x: np.ndarray, y: np.ndarray, method: str) -> float:
    if method == "pearson":
        return float(stats.pearsonr(x, y).statistic)
    return float(stats.spearmanr(x, y).statistic)


def correlation_ci(
    x: Sequence[float],
    y: Sequence[float],
    method: Literal["pearson", "spearman"] = "spearman",
    ci: Literal["fisher", "bootstrap"] = "fisher",
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Correlation:
    """Correlation of ``x`` and ``y`` (e.g. compression intensity and brittleness) with a CI.

    ``fisher``: tanh(atanh(r) -+ z_{(1+c)/2} * SE), needs n >= 4. ``bootstrap``: percentile interval of
    ``n_boot`` resamples of the pairs drawn with ``numpy.random.default_rng(seed)``; resamples whose x or y
    is constant have no correlation and are skipped (scipy.stats.bootstrap would make the interval NaN).
    """
    if method not in ("pearson", "spearman") or ci not in ("fisher", "bootstrap"):
        raise DataError(
            f"correlation_ci: method must be pearson|spearman and ci fisher|bootstrap; got {method}, {ci}"
        )
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise DataError(f"correlation_ci: x and y must be 1-D of equal length; got {xa.shape} and {ya.shape}")
    keep = ~(np.isnan(xa) | np.isnan(ya))
    xa, ya = xa[keep], ya[keep]
    n = int(xa.size)
    nan = float("nan")

    def out(r: float, lo: float, hi: float, p: float, reason: str = "") -> Correlation:
        return Correlation(r, lo, hi, p, n, method, ci, reason)

    if n < 3:
        return out(nan, nan, nan, nan, f"fewer than 3 points (n={n}, NaN pairs dropped)")
    if np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return out(nan, nan, nan, nan, "x or y is constant")
    res = stats.pearsonr(xa, ya) if method == "pearson" else stats.spearmanr(xa, ya)
    r, p = float(res.statistic), float(res.pvalue)
    if ci == "fisher":
        if n < 4:
            return out(r, nan, nan, p, "the Fisher-z interval needs n >= 4")
        se = (1.0 if method == "pearson" else math.sqrt(1.06)) / math.sqrt(n - 3)
        zc = stats.norm.ppf(0.5 + confidence / 2)
        z = math.atanh(min(max(r, -1 + 1e-15), 1 - 1e-15))  # r = +-1 would give an infinite z
        return out(r, math.tanh(z - zc * se), math.tanh(z + zc * se), p)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        if np.ptp(xa[i]) == 0 or np.ptp(ya[i]) == 0:
            continue
        boots.append(_corr(xa[i], ya[i], method))
    if len(boots) < n_boot // 2:
        return out(r, nan, nan, p, f"only {len(boots)} of {n_boot} bootstrap resamples were not constant")
    lo, hi = np.quantile(boots, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return out(r, float(lo), float(hi), p)


def brittleness_vs_intensity(
    scores: pd.DataFrame,
    base_of: Mapping[str, str],
    intensity: Mapping[str, float],
    higher_is_better: bool = True,
    method: Literal["pearson", "spearman"] = "spearman",
    ci: Literal["fisher", "bootstrap"] = "fisher",
    seed: int = 0,
) -> tuple[pd.DataFrame, Correlation]:
    """Brittleness of each compressed variant and its correlation with compression intensity.

    ``scores``: (model x domain) table holding the variants and their bases; ``base_of``: variant -> its
    uncompressed base model; ``intensity``: variant -> compression intensity (gem/compress.py).
    Returns the per-variant table (base, intensity, brittleness, notes) and the correlation.
    """
    rows = []
    for variant, base in base_of.items():
        for m in (variant, base):
            if m not in scores.index:
                raise DataError(f"the score table has no row '{m}'; rows: {list(scores.index)}")
        if variant not in intensity:
            raise DataError(f"no compression intensity for variant '{variant}'")
        b = brittleness(scores.loc[base].to_dict(), scores.loc[variant].to_dict(), higher_is_better)
        rows.append(
            {
                "model": variant,
                "base": base,
                "intensity": float(intensity[variant]),
                "brittleness": b.value,
                "notes": b.reason,
            }
        )
    table = pd.DataFrame(rows, columns=["model", "base", "intensity", "brittleness", "notes"]).set_index(
        "model"
    )
    corr = correlation_ci(
        table["intensity"].to_numpy(), table["brittleness"].to_numpy(), method, ci, seed=seed
    )
    return table, corr
