"""Video: backbones (``models``), data loading (``data``), training and evaluation (``engine``)."""
