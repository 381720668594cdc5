"""The map-quality ladder: how good must a reference map be to guide the classifier on this data?

Why: a method that trains towards a VLM's map and ties vanilla leaves open whether the loss or the
map falls short. The ladder answers it on the run's own data: the same loss is trained towards the
ground-truth mask made coarse (area-pooled to a VLM-like grid: ``ladder_mask<g>``), with its halo cut
(``_cut``) and at full resolution (``oracle_mask``), and the pipeline's own references (GALS, PARIC's
mean / median, ProLIP, LaZSL) are placed on the same axes: worst-group accuracy (with its CI over
seeds) against the reference's energy-in-mask and grid, measured on the train split at the
classifier's input size, as the loss sees it. It needs object masks; without them it is skipped
with a line that says so.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from paric.config import Config
from paric.regularizers import REGULARIZERS
from paric.regularizers.reference import REFERENCES, build_reference, needed_columns
from paric.train.data import iterate, load_split, prepare


def ladder_methods(cfg: Config, methods: list[str]) -> list[str]:
    """The trained methods whose loss pulls towards a reference map or mask (the ladder's points)."""
    out = []
    for m in methods:
        mc = cfg.method(m)
        if mc.reference != "none" and mc.posthoc == "none" and REGULARIZERS.get(mc.regularizer).needs_reference:
            out.append(m)
    return out


def reference_grid(cfg: Config, method: str, store_grid: dict[str, tuple[int, int]]) -> str:
    """The grid a method's reference is made at: ``<g>×<g>`` for a pooled mask or a stored map, ``full``
    for the mask at the classifier's size."""
    kind = REFERENCES.get(cfg.method(method).reference)
    if kind.grid is not None:
        return f"{kind.grid}×{kind.grid}"
    cols = [c for c in kind.columns if c != "mask"]
    if not cols:
        return "full"
    h, w = store_grid.get(cols[0], (0, 0))
    return f"{h}×{w}"


def reference_quality(cfg: Config, root: Path, methods: list[str], split: str = "train", batch_size: int = 256
                      ) -> tuple[dict[str, dict[str, float]], dict[str, tuple[int, int]]]:
    """Per method: energy-in-mask and pointing game of its reference as the loss sees it (built by
    :func:`build_reference` at the classifier's input size, renormalised and floored as the method
    says; uncertainty weights left aside), mean over the split's images; and each map column's grid."""
    size = cfg.classifier.image_size
    cols = sorted({c for m in methods for c in needed_columns(cfg.method(m)) if c != "mask"})
    arrays = load_split(root, cfg.layout.maps(split), split, size, cols, True)  # all K samples
    grids = {c: (int(arrays[c].shape[-2]), int(arrays[c].shape[-1])) for c in cols}
    sums = {m: np.zeros(2) for m in methods}
    counts = {m: 0 for m in methods}
    for raw in iterate(arrays, batch_size, shuffle=False):
        b = prepare(raw, size, torch.device("cpu"))
        inside = b["mask"] > 0
        for m in methods:
            ref = build_reference(b, cfg.method(m), (size, size))
            a = ref.map.flatten(1)
            total = a.sum(1)
            keep = total > 0
            energy = (a * inside.flatten(1)).sum(1)[keep] / total[keep]
            hit = inside.flatten(1).gather(1, a.argmax(1, keepdim=True))[:, 0][keep]
            sums[m] += [float(energy.sum()), float(hit.float().sum())]
            counts[m] += int(keep.sum())
    return ({m: {"energy_in_mask": sums[m][0] / max(1, counts[m]), "pointing_game": sums[m][1] / max(1, counts[m])}
             for m in methods}, grids)


def build_ladder(cfg: Config, root: Path, summary: dict) -> dict:
    """``ladder.json``'s content: one point per reference-trained method (its reference's quality on the
    train split, its grid, its test worst-group and mean-of-groups with CIs), and ``before`` (vanilla)
    as the floor. ``{"skipped": why}`` when the data has no masks or no method trains towards a map."""
    from paric.data import WaterbirdsDataset

    if not WaterbirdsDataset(root, "train", with_masks=True).has_masks:
        return {"skipped": "the dataset has no object masks: energy-in-mask and the mask rungs need them"}
    methods = ladder_methods(cfg, list(summary["methods"]))
    if not methods:
        return {"skipped": "no trained method pulls towards a reference map or mask"}
    quality, grids = reference_quality(cfg, root, methods)
    points = []
    for m in methods:
        mc, row = cfg.method(m), summary["methods"][m]
        kind = "mask" if "mask" in REFERENCES.get(mc.reference).columns else "vlm"
        points.append({"method": m, "reference": mc.reference, "kind": kind, "grid": reference_grid(cfg, m, grids),
                       "halo_cut": mc.reference_floor > 0, "train_groups": mc.train_groups, **quality[m],
                       **{k: row[k] for k in ("worst_group_acc", "mean_group_acc") if k in row}})
    floor = summary["methods"].get(cfg.report.before, {})
    return {"split": "train", "size": cfg.classifier.image_size, "points": points,
            "before": {"method": cfg.report.before,
                       **{k: floor[k] for k in ("worst_group_acc", "mean_group_acc") if k in floor}}}


def ladder_lines(ladder: dict) -> list[str]:
    """The report's ladder section: the table, sorted by energy-in-mask."""
    lines = ["## Map-quality ladder", ""]
    if "skipped" in ladder:
        return lines + [f"Skipped: {ladder['skipped']}.", ""]
    lines += ["The same loss towards the ground-truth mask made coarse (`mask<g>`: area-pooled to g×g, bilinear "
              "up, renormalised; `_cut`: only the map's core, `reference_floor=0.5`) and towards the pipeline's "
              f"own maps; energy-in-mask and pointing game of each reference as the loss sees it ({ladder['split']} "
              f"split, {ladder['size']} px); test accuracy in %, mean [95 % CI] over seeds.", "",
              "| method | reference | grid | halo cut | energy-in-mask | pointing game | worst-group | mean-of-groups |",
              "|---|---|---|---|---|---|---|---|"]

    def acc(e: dict | None) -> str:
        if not e:
            return "—"
        ci = e.get("ci") or {"lo": e["mean"], "hi": e["mean"]}
        return f"{100 * e['mean']:.1f} [{100 * ci['lo']:.1f}, {100 * ci['hi']:.1f}]"

    for p in sorted(ladder["points"], key=lambda p: (p["train_groups"], p["energy_in_mask"])):
        lines.append(f"| {p['method']} | {p['reference']} | {p['grid']} | {'yes' if p['halo_cut'] else 'no'} | "
                     f"{p['energy_in_mask']:.3f} | {p['pointing_game']:.3f} | {acc(p.get('worst_group_acc'))} | "
                     f"{acc(p.get('mean_group_acc'))} |")
    b = ladder["before"]
    lines.append(f"| {b['method']} (no reference) | — | — | — | — | — | {acc(b.get('worst_group_acc'))} | "
                 f"{acc(b.get('mean_group_acc'))} |")
    return lines + [""]
