"""The main job: MovieLens streamed through a local streamrec, recommendations and latency shown."""
