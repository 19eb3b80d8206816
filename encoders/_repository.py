"""Write the Triton model repository that serves the encoder (templates + packaged weights)."""

from __future__ import annotations

import os
import shutil
import string
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from encoders import _pooling
from encoders._local import packaged_model_path

_TEMPLATE = "text_encoder"
# what AutoTokenizer/AutoModel read; the rest of the packaged folder is sentence-transformers metadata
_WEIGHT_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def _copy_tree(src: Traversable, dest: Path, values: dict[str, str]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name == "__pycache__":
            continue
        if item.is_dir():
            _copy_tree(item, dest / item.name, values)
        elif item.name.endswith(".pbtxt"):
            text = string.Template(item.read_text(encoding="utf-8")).substitute(values)
            (dest / item.name).write_text(text, encoding="utf-8")
        else:
            (dest / item.name).write_bytes(item.read_bytes())


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)  # 90 MB of weights: share them when on the same filesystem
    except OSError:
        shutil.copy2(src, dest)


def export_model_repository(
    dest: Path,
    *,
    model_name: str = "text_encoder",
    max_batch_size: int = 128,
    max_length: int = 128,
) -> Path:
    """Write ``dest/<model_name>/`` (configs, ``1/model.py``, weights) and return ``dest``.

    ``config.pbtxt`` runs on CPU; ``configs/gpu.pbtxt`` is picked by ``--model-config-name=gpu``.
    Re-exporting over an existing repository refreshes it in place.
    """
    if max_batch_size < 1 or max_length < 1:
        raise ValueError("max_batch_size and max_length must be >= 1")
    dest = Path(dest)
    model_dir = dest / model_name
    values = {"max_batch_size": str(max_batch_size), "max_length": str(max_length)}
    _copy_tree(resources.files("encoders") / "model_repository" / _TEMPLATE, model_dir, values)
    version_dir = model_dir / "1"
    shutil.copyfile(Path(_pooling.__file__), version_dir / "_pooling.py")
    weights_src = Path(packaged_model_path())
    weights_dest = version_dir / "minilm"
    weights_dest.mkdir(exist_ok=True)
    for name in _WEIGHT_FILES:
        _link_or_copy(weights_src / name, weights_dest / name)
    return dest
