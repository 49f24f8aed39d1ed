"""cwt-jax: few-shot segmentation with the Classifier Weight Transformer in JAX."""
