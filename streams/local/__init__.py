"""Local real parts for development and tests: an Apache Kafka broker and a Triton server."""
