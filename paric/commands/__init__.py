"""Every command of ``paric`` (the console script), one module each; ``pipelines/*.py`` call the same ``main``.

A registry, not a chain of names: the dispatcher and ``paric --help`` read :data:`COMMANDS`, and a
module is imported only when its command runs (``paric --help`` needs neither torch nor Ray).
"""
from __future__ import annotations

#: command → (module with ``main(argv, prog)``, one line for ``paric --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("paric.commands.run", "the whole pipeline: data → VLM → maps → sweeps → final runs → report"),
    "precompute": ("paric.commands.precompute", "the map store only: data → VLM → adapters → maps → map quality"),
    "train": ("paric.commands.train", "train and evaluate chosen methods and seeds on the map store"),
    "sweep": ("paric.commands.sweep", "Ray Tune + Optuna sweeps of methods' options"),
    "zeroshot": ("paric.commands.zeroshot", "zero-shot accuracy of the pipeline's VLM (CLIP prompts, LaZSL)"),
    "families": ("paric.commands.families", "the pipeline once per VLM family, merged into one report"),
    "config": ("paric.commands.config", "print the resolved config, or every config key with its meaning"),
    "data": ("paric.data.check", "check a native dataset directory before a long run (paric data check DIR)"),
}
