"""Report figures: reference maps beside the classifier's attention, per-group accuracy, and the
sweep's Optuna plots.

Why these three: the map figure shows *what* each method was pushed towards and whether the
classifier followed (image | GALS map | PARIC mean | PARIC std | Grad-CAM before | after); the bars
show where the worst group sits; Optuna's own importance / history plots show what the sweep
learned. Everything is drawn with the Agg backend, so it runs on a headless cluster node.
"""
from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
from optuna.distributions import BaseDistribution  # noqa: E402

from paric.attention.sources import declared_columns  # noqa: E402
from paric.config import Config  # noqa: E402
from paric.data import WaterbirdsDataset  # noqa: E402
from paric.io import atomic_path  # noqa: E402
from paric.models.cam import classifier_gradcam  # noqa: E402
from paric.models.classifier import classifier_for_state  # noqa: E402
from paric.store import read_store  # noqa: E402

log = logging.getLogger("paric")


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def group_names(root: Path) -> list[str]:
    """'class/place' per group index (group = y * n_places + place)."""
    ds = WaterbirdsDataset(root, "test", with_masks=False)
    return [f"{c}/{p}" for c in ds.classes for p in ds.places]


def load_classifier(cfg: Config, n_classes: int, path: Path) -> torch.nn.Module:
    """A trained run's best-validation classifier (``model.pt`` of a training run)."""
    c = cfg.classifier
    state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    return classifier_for_state(c.arch, n_classes, c.width, state).eval()


def pick_examples(group: np.ndarray, per_group: int) -> list[int]:
    """The first ``per_group`` rows of every group present, in group order (deterministic)."""
    rows: list[int] = []
    for g in sorted(set(group.tolist())):
        rows.extend(np.flatnonzero(group == g)[:per_group].tolist())
    return rows


def maps_figure(cfg: Config, root: Path, before: tuple[str, Path], after: tuple[str, Path], out: Path,
                per_group: int = 1) -> Path:
    """Rows: test images (``per_group`` per group); columns: image, each source's figure maps (GALS'
    map, PARIC's mean and std by default), the classifier's Grad-CAM (true class) of the ``before``
    run and of the ``after`` run."""
    shown = [c for c in declared_columns(cfg.maps.sources).values() if c.in_figure]
    store = read_store(cfg.layout.maps("test"), columns=["image_id", "label", "group", *[c.name for c in shown]])
    ds = WaterbirdsDataset(root, "test", image_size=cfg.classifier.image_size, with_masks=False)
    index = {f: i for i, f in enumerate(ds.rows["img_filename"])}
    rows = pick_examples(store.group, per_group)
    names = group_names(root)
    images = np.stack([ds[index[store.image_id[r]]]["image"] for r in rows])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    labels = torch.from_numpy(store.label[rows])
    cams = {}
    for title, path in (before, after):
        model = load_classifier(cfg, ds.n_classes, path)
        _, cam = classifier_gradcam(model, x, labels)
        cams[title] = cam.detach().numpy()
    cols = ["image", *[c.title for c in shown], f"Grad-CAM {before[0]}", f"Grad-CAM {after[0]}"]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.0 * len(cols), 2.0 * len(rows)), squeeze=False)
    extent = (-0.5, images.shape[2] - 0.5, images.shape[1] - 0.5, -0.5)  # imshow pixel-centre convention
    for i, r in enumerate(rows):
        panels = [None, *[store.maps[c.name][r] for c in shown], cams[before[0]][i], cams[after[0]][i]]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(images[i])
            if panel is not None:
                ax.imshow(np.asarray(panel, dtype=np.float32), cmap="jet", alpha=0.5, extent=extent,
                          interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=8)
            if j == 0:
                ax.set_ylabel(names[int(store.group[r])], fontsize=8)
    return _save(fig, out)


def lazsl_figure(examples: list[dict], names: list[str], out: Path) -> Path:
    """Rows: test images; columns: the image with its top crops (numbered by their share of the true
    class's score), the two LaZSL pixel maps, and each crop's best descriptor."""
    import matplotlib.patches as patches

    fig, axes = plt.subplots(len(examples), 4, figsize=(11.0, 2.2 * len(examples)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1, 1.9]})
    colours = ["red", "orange", "yellow", "cyan", "lime"]
    for i, ex in enumerate(examples):
        img = ex["image"]
        ax_img, ax_mass, ax_score, ax_txt = axes[i]
        ax_img.imshow(img)
        for j, crop in enumerate(ex["crops"]):
            x0, y0, x1, y1 = crop["box"]
            ax_img.add_patch(patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, linewidth=1.5,
                                               edgecolor=colours[j % len(colours)]))
            ax_img.text(x0 + 1, y0 + 5, str(j + 1), color=colours[j % len(colours)], fontsize=7)
        for ax, key in ((ax_mass, "mass"), (ax_score, "score")):
            ax.imshow(img)
            ax.imshow(np.asarray(ex["heat"][key], dtype=np.float32), cmap="jet", alpha=0.5)
        lines = [f"{names[ex['group']]}: true {ex['label']}, LaZSL says {ex['predicted']}"]
        lines += [f"{j + 1}. mass {c['mass']:.3f}, score {c['score']:.4f}: {c['descriptor']}"
                  for j, c in enumerate(ex["crops"])]
        ax_txt.text(0.0, 0.5, "\n".join(lines), fontsize=7, va="center", family="monospace")
        ax_txt.axis("off")
        for ax in (ax_img, ax_mass, ax_score):
            ax.set_xticks([])
            ax.set_yticks([])
        if i == 0:
            ax_img.set_title("top crops (true class)", fontsize=8)
            ax_mass.set_title("LaZSL map: mass", fontsize=8)
            ax_score.set_title("LaZSL map: score share", fontsize=8)
    return _save(fig, out)


def methods_ci_figure(methods: dict[str, dict], out: Path,
                      metrics: tuple[tuple[str, str], ...] = (("worst_group_acc", "worst-group"),
                                                              ("mean_group_acc", "mean-of-groups"))) -> Path:
    """One row per method, sorted by worst-group mean: each metric's mean with its 95 % CI over seeds
    and every seed as a faint dot (replaces the per-group bars, whose 18 bars per group and legend
    over them could not be read)."""
    rows = sorted((m for m in methods if metrics[0][0] in methods[m]),
                  key=lambda m: methods[m][metrics[0][0]]["mean"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.9 + 0.32 * max(1, len(rows))),
                             sharey=True, squeeze=False)
    ys = np.arange(len(rows))
    for ax, (key, label) in zip(axes[0], metrics):
        for y, m in zip(ys, rows):
            e = methods[m].get(key)
            if not e:
                continue
            ci = e.get("ci") or {"lo": e["mean"], "hi": e["mean"]}
            ax.plot([100 * ci["lo"], 100 * ci["hi"]], [y, y], color="tab:blue", lw=2, solid_capstyle="butt")
            ax.plot(100 * e["mean"], y, "o", color="tab:blue", ms=5)
            ax.plot([100 * v for v in e["runs"]], [y] * len(e["runs"]), "|", color="0.45", ms=7)
        ax.set_xlim(-2, 102)
        ax.set_xlabel(f"test {label} accuracy (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(ys)
    axes[0][0].set_yticklabels(rows, fontsize=8)
    fig.suptitle("mean and 95 % bootstrap CI over seeds (ticks: each seed)", fontsize=9)
    return _save(fig, out)


def sweep_study(trials: list[dict], dists: dict[str, BaseDistribution], name: str) -> optuna.Study:
    """The sweep's trials as an in-memory Optuna study (failed trials as FAIL), for Optuna's plots."""
    study = optuna.create_study(study_name=name, direction="maximize")
    for t in trials:
        params = {k: v for k, v in t["params"].items() if k in dists}
        failed = t.get("error") is not None or t.get("score") is None
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: dists[k] for k in params},
            value=None if failed else float(t["score"]),
            state=optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE))
    return study


def sweep_figures(trials: list[dict], dists: dict[str, BaseDistribution], method: str, out_dir: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importances of one method's sweep."""
    from optuna.visualization import matplotlib as ovm

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = sweep_study(trials, dists, method)
    paths = []
    ax = ovm.plot_optimization_history(study, target_name="val balanced acc")
    paths.append(_save(ax.figure, out_dir / f"sweep_{method}_history.png"))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) >= 2 and len(dists) >= 1:
        try:
            ax = ovm.plot_param_importances(study, target_name="val balanced acc")
            paths.append(_save(ax.figure, out_dir / f"sweep_{method}_importances.png"))
        except (RuntimeError, ValueError) as exc:  # e.g. every trial drew the same values
            log.warning("sweep %s: no parameter-importance plot (%s)", method, exc)
            plt.close("all")
    return paths


def ladder_figure(ladder: dict, out: Path) -> Path:
    """Worst-group accuracy (mean, 95 % CI over seeds) against the reference's energy-in-mask: the
    mask rungs (labelled by grid, hollow where the halo is cut) and the pipeline's maps; the band is
    ``before`` (vanilla) with its CI."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    b = ladder["before"].get("worst_group_acc")
    if b:
        ci = b.get("ci") or {"lo": b["mean"], "hi": b["mean"]}
        ax.axhspan(100 * ci["lo"], 100 * ci["hi"], color="0.85", zorder=0)
        ax.axhline(100 * b["mean"], color="0.5", lw=1, zorder=1, label=f"{ladder['before']['method']} (CI band)")
    colours = {"mask": "tab:green", "vlm": "tab:blue"}
    for p in ladder["points"]:
        e = p.get("worst_group_acc")
        if not e or p["train_groups"] != "all":
            continue
        ci = e.get("ci") or {"lo": e["mean"], "hi": e["mean"]}
        x, y = p["energy_in_mask"], 100 * e["mean"]
        ax.errorbar(x, y, yerr=[[y - 100 * ci["lo"]], [100 * ci["hi"] - y]], fmt="o", color=colours[p["kind"]],
                    mfc="white" if p["halo_cut"] else colours[p["kind"]], capsize=3, zorder=3)
        label = f"{p['method']} ({p['grid']})" if p["kind"] == "vlm" else f"{p['grid']}{' cut' if p['halo_cut'] else ''}"
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xlabel(f"energy-in-mask of the reference ({ladder['split']} split, {ladder['size']} px)")
    ax.set_ylabel("test worst-group accuracy (%)")
    ax.set_xlim(0, 1.05)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.plot([], [], "o", color=colours["mask"], label="ground-truth mask at a grid")
    ax.plot([], [], "o", color=colours["vlm"], label="the VLM's maps")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("map-quality ladder", fontsize=9)
    return _save(fig, out)
