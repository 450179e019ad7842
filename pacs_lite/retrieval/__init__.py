"""The one retrieval path: a plan of what goes out (:mod:`.plan`) and the service that carries it out."""

from .plan import AS_STORED, Carrier, Option, Step, accepts_as_stored, plan, sent_syntax
from .service import Delivered, Failure, Frames, RetrievalError, RetrievalService, encode_part10

__all__ = [
    "AS_STORED",
    "Carrier",
    "Delivered",
    "Failure",
    "Frames",
    "Option",
    "RetrievalError",
    "RetrievalService",
    "Step",
    "accepts_as_stored",
    "encode_part10",
    "plan",
    "sent_syntax",
]
