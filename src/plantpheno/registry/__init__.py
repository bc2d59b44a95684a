"""The model registry: packages, stores, aliases, export, and prediction with a packaged model."""
