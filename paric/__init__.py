"""paric: language-guided attention regularisation (GALS, PARIC) as a Ray pipeline.

The public API (:mod:`paric.api`) is imported on first use, so ``import paric`` stays cheap:
``paric.clip_model``, ``paric.reference_maps``, ``paric.fit_adapters``, ``paric.AttentionLoss``, ``paric.run``.
"""

__version__ = "0.1.0"

__all__ = ["AttentionLoss", "clip_model", "fit_adapters", "reference_maps", "run"]


def __getattr__(name: str):
    if name in __all__:
        from paric import api

        return getattr(api, name)
    raise AttributeError(f"module 'paric' has no attribute {name!r}")
