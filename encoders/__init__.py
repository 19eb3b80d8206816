"""Text encoders for the catalog: one interface, an in-process and a Triton implementation.

>>> from encoders import EMBEDDING_DIM, TritonEncoder
>>> EMBEDDING_DIM
384
"""

from encoders._base import EMBEDDING_DIM, Encoder, EncoderError
from encoders._local import LocalEncoder
from encoders._repository import export_model_repository
from encoders._triton import TritonEncoder

__all__ = [
    "EMBEDDING_DIM",
    "Encoder",
    "EncoderError",
    "LocalEncoder",
    "TritonEncoder",
    "export_model_repository",
]
