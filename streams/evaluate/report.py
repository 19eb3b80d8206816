"""What a run writes: ``metrics.json``, ``results.md`` (the table and the goals, met or not) and ``pareto.png``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.evaluate.ablation import POLICY, PREFIX
from streams.evaluate.baselines import BASELINES
from streams.evaluate.metrics import METRICS
from streams.evaluate.run import SWEPT
from streams.recommender import SOURCES
from streams.settings import Settings

Table = Mapping[str, Mapping[str, float]]
HEADERS = {
    "hr@10": "HR@10", "ndcg@10": "NDCG@10", "mrr": "MRR", "recall@10": "Recall@10", "ild@10": "ILD@10",
    "genre_ild@10": "genre ILD@10", "genres@10": "genres@10", "coverage": "coverage", "novelty": "novelty",
    "gini": "Gini", "calibration_kl": "calib. KL", "explore_share": "explore",
}
#: Where each swept reranker meets pure relevance (MMR and DPP at 1, calibration at 0).
RELEVANCE_END = {"mmr": 1.0, "dpp": 1.0, "calibrated": 0.0}


@dataclass(frozen=True)
class Goal:
    text: str
    met: bool
    detail: str


def parameter(name: str, settings: Settings) -> tuple[str, float] | None:
    """``(reranker, its parameter)`` of a swept policy or sweep point; None for the others.

    >>> parameter("mmr@0.3", Settings()), parameter("dpp", Settings()), parameter("popular", Settings())
    (('mmr', 0.3), ('dpp', 0.7), None)
    """
    policy, _, lam = name.partition("@")
    if policy not in SWEPT:
        return None
    return policy, float(lam) if lam else float(getattr(settings, SWEPT[policy]))


def goals(table: Table, settings: Settings, full: bool = False) -> list[Goal]:
    """The issue's three goals, checked against a run's numbers (any that cannot be checked is not met).

    On the full replay (``full``) the best policy must reach 1.2 x the best baseline's NDCG@10; on a
    sample of users, at least equal it.
    """
    ours = {n: m for n, m in table.items() if n not in BASELINES}
    base = {n: m for n, m in table.items() if n in BASELINES}
    factor = 1.2 if full else 1.0
    text = f"streamrec's best policy reaches {factor:g} x the best baseline's NDCG@10" + (
        " (full replay)" if full else " (a sample of users)"
    )
    out = []
    if ours and base:
        best, best_base = (max(t, key=lambda n: t[n]["ndcg@10"]) for t in (ours, base))
        a, b = ours[best]["ndcg@10"], base[best_base]["ndcg@10"]
        out.append(Goal(text, a >= factor * b,
                        f"`{best}` {a:.4f} vs `{best_base}` {b:.4f} ({a / b - 1:+.1%})" if b else f"`{best}` {a:.4f}"))
    else:
        out.append(Goal(text, False, "not run"))
    text = "a diversified policy within 2% of the best policy's NDCG@10 raises ILD@10 by >= 25% and genres@10 by >= 20%"
    if len(ours) < 2:
        out.append(Goal(text, False, "diversified policies not run"))
    else:
        top_name = max(ours, key=lambda n: ours[n]["ndcg@10"])
        top = ours[top_name]

        def checks(m: Mapping[str, float]) -> list[bool]:
            return [m["ndcg@10"] >= 0.98 * top["ndcg@10"], m["ild@10"] >= 1.25 * top["ild@10"],
                    m["genres@10"] >= 1.2 * top["genres@10"]]

        candidates = {n: m for n, m in ours.items() if n != top_name}
        # the one closest to meeting it: most conditions met, then the best NDCG
        name = max(candidates, key=lambda n: (sum(checks(candidates[n])), candidates[n]["ndcg@10"]))
        m = candidates[name]
        met = [n for n, c in candidates.items() if all(checks(c))]
        closest = (
            f"`{name}` against `{top_name}`: NDCG@10 {m['ndcg@10'] / top['ndcg@10'] - 1:+.1%}, "
            f"ILD@10 {m['ild@10'] / top['ild@10'] - 1:+.1%}, genres@10 {m['genres@10'] / top['genres@10'] - 1:+.1%}"
        )
        out.append(Goal(text, bool(met), (f"met by {', '.join(f'`{n}`' for n in met)}; " if met else "") + closest))
    pop, default = table.get("popular"), table.get(settings.policy)
    text = "catalog coverage at least twice that of most-popular"
    if pop is None or default is None:
        out.append(Goal(text, False, f"`popular` or the default policy `{settings.policy}` not run"))
    else:
        ratio = default["coverage"] / pop["coverage"] if pop["coverage"] else float("inf")
        out.append(Goal(text, ratio >= 2, f"default policy `{settings.policy}` {default['coverage']:.4f} vs "
                                         f"`popular` {pop['coverage']:.4f} ({ratio:.1f}x)"))
    return out


def markdown(result: Mapping[str, Any], seconds: Mapping[str, float], settings: Settings, header: str) -> str:
    """``results.md``: how the run was made, the table (best value of each column in bold), the goals."""
    table: Table = result["policies"]
    lines = [header, ""]
    cols = [c for c in METRICS]
    lines.append("| system | " + " | ".join(HEADERS[c] for c in cols) + " | seconds |")
    lines.append("| --- " * (len(cols) + 2) + "|")
    higher_is_better = {"calibration_kl": False, "gini": False}
    best = {}
    for c in cols:
        values = [m[c] for m in table.values()]
        if values and c != "explore_share":
            best[c] = max(values) if higher_is_better.get(c, True) else min(values)
    for name, m in table.items():
        cells = []
        for c in cols:
            text = f"{m[c]:.4f}" if c not in ("genres@10", "novelty") else f"{m[c]:.2f}"
            cells.append(f"**{text}**" if best.get(c) == m[c] else text)
        kind = "baseline: " if name in BASELINES else ""
        lines.append(f"| {kind}`{name}` | " + " | ".join(cells) + f" | {seconds.get(name, 0):.0f} |")
    lines += ["", "Goals:", ""]
    for g in goals(table, settings, full=not result["protocol"].get("sample_users")):
        lines.append(f"- {'**met**' if g.met else '**not met**'}: {g.text}: {g.detail}.")
    return "\n".join(lines + recall_and_ablation(result)) + "\n"


def recall_and_ablation(result: Mapping[str, Any]) -> list[str]:
    """The pool recall of :data:`~streams.evaluate.ablation.POLICY` and the ablation, as markdown lines
    (none for what the run did not measure)."""
    recall: Mapping[str, Mapping[str, float]] = result.get("pool_recall", {})
    ablated: Table = result.get("ablation", {})
    lines: list[str] = []
    if POLICY in recall:
        mine = recall[POLICY]
        lines += [
            "", f"Pool recall of `{POLICY}` (share of positive engagements whose item was among the candidates of "
            "the list the user saw before, by the source that offered it; the candidate pool is the same for "
            "every policy):", "",
            "| total | " + " | ".join(SOURCES) + " |", "| --- " * (len(SOURCES) + 1) + "|",
            f"| {mine['total']:.4f} | " + " | ".join(f"{mine[s]:.4f}" for s in SOURCES) + " |",
        ]
    full = result["policies"].get(POLICY)
    if ablated and full is not None:
        lines += [
            "", f"Ablation: `{POLICY}` without one candidate source or one group of the ranker's features:", "",
            "| system | NDCG@10 | vs full | HR@10 | pool recall |", "| --- | --- | --- | --- | --- |",
        ]
        for name, m in {POLICY: full, **ablated}.items():
            change = m["ndcg@10"] / full["ndcg@10"] - 1 if full["ndcg@10"] else 0.0
            pool = f"{recall[name]['total']:.4f}" if name in recall else ""
            label = "(full)" if name == POLICY else name.removeprefix(PREFIX)
            lines.append(f"| {label} | {m['ndcg@10']:.4f} | {change:+.1%} | {m['hr@10']:.4f} | {pool} |")
    return lines


def pareto_plot(table: Table, settings: Settings, path: Path) -> None:
    """NDCG@10 against ILD@10: one curve per swept reranker (its parameter labelled, `relevance` at the
    end where it means pure relevance), the other policies and the baselines as points."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for reranker, colour in zip(SWEPT, ("tab:blue", "tab:orange", "tab:green"), strict=True):
        points = sorted(
            (p[1], n) for n in table if (p := parameter(n, settings)) is not None and p[0] == reranker
        )
        if "relevance" in table and points:
            points = sorted([*points, (RELEVANCE_END[reranker], "relevance")])
        if not points:
            continue
        xs = [table[n]["ild@10"] for _, n in points]
        ys = [table[n]["ndcg@10"] for _, n in points]
        ax.plot(xs, ys, "o-", color=colour, label=reranker)
        for (lam, _), x, y in zip(points, xs, ys, strict=True):
            ax.annotate(f"{lam:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=colour)
    others = [n for n in table if parameter(n, settings) is None]
    for n in others:
        marker, colour = ("s", "grey") if n in BASELINES else ("*", "black")
        ax.scatter(table[n]["ild@10"], table[n]["ndcg@10"], marker=marker, color=colour, s=60 if marker == "*" else 30)
        ax.annotate(n, (table[n]["ild@10"], table[n]["ndcg@10"]), textcoords="offset points", xytext=(5, -9),
                    fontsize=8)
    ax.set_xlabel("ILD@10 (1 - mean pairwise cosine of item embeddings)")
    ax.set_ylabel("NDCG@10 (next 5 positives)")
    ax.set_title("Relevance against diversity (curves: reranker parameter sweeps; squares: baselines)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no curve when no swept reranker ran
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(
    out: Path, result: Mapping[str, Any], seconds: Mapping[str, float], settings: Settings, header: str
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(markdown(result, seconds, settings, header))
    pareto_plot(result["policies"], settings, out / "pareto.png")
