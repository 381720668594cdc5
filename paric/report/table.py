"""Methods × metrics tables (mean ± std over seeds) as Markdown."""
from __future__ import annotations

DEFAULT_COLUMNS = [("worst_group_acc", "worst-group"), ("mean_group_acc", "mean-of-groups"), ("acc", "overall"),
                   ("ece", "ECE"), ("pgd_acc", "PGD acc"), ("cam_energy_in_mask", "CAM in mask"),
                   ("insertion_auc", "insertion"), ("deletion_auc", "deletion"), ("faithfulness", "ins − del"),
                   ("best_epoch", "best epoch"), ("epochs_trained", "epochs run"), ("seconds", "s / run")]


def fmt(entry: dict | None, scale: float = 100.0, digits: int = 1) -> str:
    if not entry:
        return "—"
    return f"{entry['mean'] * scale:.{digits}f} ± {entry['std'] * scale:.{digits}f}"


def epochs(entry: dict | None) -> str:
    """Each seed's epoch count ("7/9/8"): a run whose best epoch is its last was too short."""
    return "/".join(str(int(v)) for v in entry["runs"]) if entry else "—"


def methods_table(methods: dict[str, dict], columns: list[tuple[str, str]] | None = None) -> str:
    """Markdown table; accuracies and ECE in percent, seconds as is."""
    columns = columns or DEFAULT_COLUMNS
    head = "| method | " + " | ".join(label for _, label in columns) + " |"
    sep = "|---|" + "---|" * len(columns)
    rows = []
    for name, metrics in methods.items():
        cells = [epochs(metrics.get(key)) if key in ("best_epoch", "epochs_trained") else
                 fmt(metrics.get(key), 1.0, 0) if key == "seconds" else fmt(metrics.get(key)) for key, _ in columns]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows])
