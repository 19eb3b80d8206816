"""streamrec: a streaming, real-time recommender on Kafka.

Kafka-free core: :mod:`streams.contracts` (wire formats), :mod:`streams.interest` (user state),
:mod:`streams.retrieval` (catalog, vector index), :mod:`streams.rerank` (diversity),
:mod:`streams.recommender` (the facade). Wiring: :mod:`streams.app` (Faust agents),
:mod:`streams.local` (local Kafka and Triton), :mod:`streams.cli`.
"""

__version__ = "0.1.0"
