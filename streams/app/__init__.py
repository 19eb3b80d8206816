"""The streaming app: Faust topics, tables and agents around the Kafka-free recommender."""

from streams.app.factory import create_app

__all__ = ["create_app"]
