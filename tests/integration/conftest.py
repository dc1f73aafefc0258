from __future__ import annotations

import re

import aiohttp


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.compile(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", re.MULTILINE)
    for found_labels, value in pattern.findall(text):
        parts = sorted(p for p in found_labels.split(",") if p)
        if ",".join(parts) == wanted:
            return float(value)
    return 0.0


async def fetch_metrics(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(f"{url}/metrics") as response:
        assert response.status == 200
        return await response.text()
