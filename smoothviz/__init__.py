"""smoothviz: compress neural networks without fine-tuning, and see how training them smooth helps."""

__version__ = "0.1.0"
