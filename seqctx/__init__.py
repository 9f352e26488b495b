"""seqctx: context modules for video and sequence models."""

__version__ = "0.1.0"
