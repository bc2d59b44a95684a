"""Data: sources, splits, image decoding and caching, datasets, augmentation and the data doctor."""
