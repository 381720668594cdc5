"""paric: language-guided attention regularisation (GALS, PARIC) as a Ray pipeline."""

__version__ = "0.1.0"
