"""ProLIP (METHODS.md §4): a probabilistic VLM whose towers emit a Gaussian per input."""
