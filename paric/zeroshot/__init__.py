"""Zero-shot classifiers over the pipeline's VLM (LaZSL's optimal-transport local alignment)."""
