"""Triton python-backend model: UTF-8 texts ``TEXT [n, 1]`` -> unit-length ``EMBEDDING [n, 384]``.

Tokenizer and MiniLM run in one python model: on CPU this is the fastest and simplest layout
(no ensemble hop, no TorchScript export), and the same file serves KIND_GPU instances.
The weights sit in ``minilm/`` next to this file; ``_pooling.py`` is a copy of
``encoders/_pooling.py`` put here by ``export_model_repository``.

Module level imports only the standard library, so this file can be imported (doctest
collection, linters) where torch or Triton's ``triton_python_backend_utils`` are absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights are local; never reach for the hub
        import torch
        from transformers import AutoModel, AutoTokenizer

        params = json.loads(args["model_config"]).get("parameters", {})
        self.max_length = int(params.get("max_length", {}).get("string_value", "128"))
        if args["model_instance_kind"] == "GPU":
            self.device = torch.device(f"cuda:{args['model_instance_device_id']}")
        else:
            self.device = torch.device("cpu")
        weights = Path(__file__).resolve().parent / "minilm"
        self.tokenizer = AutoTokenizer.from_pretrained(weights)
        self.model = AutoModel.from_pretrained(weights).to(self.device).eval()

    def execute(self, requests: list[Any]) -> list[Any]:
        import torch
        import triton_python_backend_utils as pb_utils

        # a copy of encoders/_pooling.py; the stub puts the model version dir on sys.path
        from _pooling import mean_pool_l2_normalize  # type: ignore[import-not-found]

        # the dynamic batcher hands over several requests: run them as one forward pass
        texts: list[str] = []
        sizes: list[int] = []
        for request in requests:
            arr = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            texts.extend(t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in arr)
            sizes.append(len(arr))
        with torch.inference_mode():
            batch = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            emb = mean_pool_l2_normalize(hidden, batch["attention_mask"]).float().cpu().numpy()
        responses = []
        start = 0
        for size in sizes:
            out = pb_utils.Tensor("EMBEDDING", emb[start : start + size])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += size
        return responses

    def finalize(self) -> None:
        self.model = None
