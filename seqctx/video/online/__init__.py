"""Online recognition: an online TSM (``model.shift: online``) run on a stream one frame at a
time (:class:`StreamingRecognizer`), its stateless form for export (:class:`OnlineFrameNet`),
and the sources ``seqctx predict --stream`` reads."""

from .stream import OnlineFrameNet, StreamingRecognizer, online_shifts

__all__ = ["OnlineFrameNet", "StreamingRecognizer", "online_shifts"]
