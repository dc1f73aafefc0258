"""BERT-base (12 layers, 768 hidden, seq 128) with a 2-class head, from transformers' code
with a locally built configuration: no hub download, weights are seeded like every workload."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from inferpack.errors import MissingExtraError


class _BertClassifier(nn.Module):
    def __init__(self, bert: nn.Module, hidden: int, classes: int) -> None:
        super().__init__()
        self.bert = bert
        self.head = nn.Linear(hidden, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.bert(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.head(pooled)


def bert_base(options: Mapping[str, Any]) -> nn.Module:
    try:
        from transformers import BertConfig, BertModel
    except ImportError as error:
        raise MissingExtraError("transformers", "text") from error
    config = BertConfig(attn_implementation="sdpa")  # type: ignore[call-arg]  # bert-base defaults
    return _BertClassifier(BertModel(config), config.hidden_size, int(options.get("classes", 2)))
