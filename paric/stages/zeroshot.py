"""Zero-shot stage: CLIP, classification by description and LaZSL on the test split, and the crops
figure (which crops carried each image's class, and to which descriptor).

Why a stage: its accuracies go into results.json and report.md beside the methods table, cached by
the VLM's key, the data's content, the descriptor table's content and the ``lazsl`` settings.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from paric.config import Config
from paric.data import WaterbirdsDataset
from paric.data.fingerprint import dataset_fingerprint
from paric.io import write_json
from paric.stages.prepare import VLMArtifact, label_sets, stack_images
from paric.stages.runner import Stage, run_stage
from paric.report.results import ZERO_SHOT_FIGURE as FIGURE, ZERO_SHOT_RESULT as RESULT
from paric.zeroshot.evaluate import (LazslScorer, descriptor_table, descriptors_for, lazsl_config, table_id,
                                     zero_shot_tasks)
from paric.zeroshot.lazsl import crop_weights, relevance


def zeroshot_spec(cfg: Config, root: Path, vlm_art: VLMArtifact) -> Stage:
    table = table_id(descriptor_table(cfg.lazsl.descriptors), cfg.vlm.class_template)
    return Stage("zeroshot", cfg.layout.zeroshot(), ("lazsl", "vlm.class_template", "maps.seed"),
                 (vlm_art.key, dataset_fingerprint(root), table), outputs=(RESULT, FIGURE))


def crop_examples(cfg: Config, vlm, test: WaterbirdsDataset, images: torch.Tensor, per_group: int = 1,
                  top: int = 3) -> list[dict]:
    """For ``per_group`` test images of each group: the LaZSL maps of the true class (transported mass
    and score contribution), and the ``top`` crops by their contribution to its score, each with the
    descriptor that contributed most."""
    from paric.report.figures import pick_examples

    groups = test.rows["group"].to_numpy()
    rows = pick_examples(groups, per_group)
    desc = descriptors_for(test.classes, cfg.lazsl.descriptors, cfg.vlm.class_template)
    scorer = LazslScorer(vlm, desc, lazsl_config(cfg.lazsl), cfg.maps.seed)
    ids = [test.rows["img_filename"].iloc[r] for r in rows]
    labels = torch.as_tensor(test.rows["y"].to_numpy()[rows])
    sc = scorer(vlm.normalise(images[rows]), ids)
    H, W = images.shape[1:3]
    weights = {"mass": crop_weights(sc.out.plans, labels), "score": crop_weights(sc.out.plans, labels, sc.out.fused)}
    heats = {k: relevance(w, sc.boxes, H, W) for k, w in weights.items()}
    out = []
    for i, r in enumerate(rows):
        plan, fused = sc.out.plans[i, labels[i]], sc.out.fused[i, labels[i]]  # (M, N)
        mass, share = weights["mass"][i], weights["score"][i]
        best = share.argsort(descending=True)[:top].tolist()
        out.append({"image": images[r].numpy(), "group": int(groups[r]), "label": test.classes[int(labels[i])],
                    "predicted": test.classes[int(sc.out.scores[i].argmax())],
                    "heat": {k: v[i].numpy() for k, v in heats.items()},
                    "crops": [{"box": sc.boxes[i, m].tolist(), "mass": float(mass[m]), "score": float(share[m]),
                               "descriptor": desc.sentences[int(labels[i])][int((plan[m] * fused[m]).argmax())]}
                              for m in best]})
    return out


def zeroshot_stage(cfg: Config, root: Path, vlm_art: VLMArtifact) -> dict:
    """``zeroshot/lazsl.json`` ({task: {n, crops, classes, fell_back, acc: {clip, by_description,
    lazsl}}}) and ``zeroshot/lazsl_crops.png``; cached."""
    spec = zeroshot_spec(cfg, root, vlm_art)
    out = spec.marker_dir

    def compute() -> None:
        from paric.report.figures import group_names, lazsl_figure  # matplotlib: slow import

        vlm = vlm_art.load()
        test = WaterbirdsDataset(root, "test", image_size=vlm.image_size, with_masks=False)
        images, ids = stack_images(test), list(test.rows["img_filename"])
        tasks = {name: (classes, y, descriptors_for(classes, cfg.lazsl.descriptors, cfg.vlm.class_template))
                 for name, (classes, y) in label_sets(root, test).items()}
        result = zero_shot_tasks(vlm, images, ids, tasks, cfg.vlm.class_template, lazsl_config(cfg.lazsl),
                                 cfg.maps.seed)
        lazsl_figure(crop_examples(cfg, vlm, test, images), group_names(root), out / FIGURE)
        write_json(out / RESULT, result)

    return run_stage(cfg, spec, compute, lambda: json.loads((out / RESULT).read_text()))


def accuracy_lines(result: dict) -> list[str]:
    """One line per task: the three classifiers' accuracies (and which classes fell back)."""
    lines = []
    for name, r in result.items():
        if not isinstance(r, dict) or "acc" not in r:
            continue
        acc = r["acc"]
        lines.append(f"zero-shot among {name} ({len(r['classes'])}) on {r['n']} test images: clip "
                     f"{100 * acc['clip']:.1f}  by description {100 * acc['by_description']:.1f}  lazsl "
                     f"{100 * acc['lazsl']:.1f}  ({r['crops']} crops; fell back: {r['fell_back'] or 'none'})")
    return lines
