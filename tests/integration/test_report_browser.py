"""The report page in a real browser: headless Chromium decodes every embedded chart.

The report carries no test hooks. A test-only harness page, served with the report from
tmp_path by http.server on 127.0.0.1, loads it in an iframe and, once the iframe has
loaded (images included), writes what the browser saw into its own DOM as JSON:
each image's natural size and the resources the report fetched (none: it is
self-contained). ``chromium --dump-dom`` prints that DOM. Skipped without a chromium
binary; CI installs Debian's ``chromium``.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from inferpack.report import write_report
from tests.unit.test_report import ALL_PLOTS, make_document

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_TIMEOUT_S = 90

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)"
)

HARNESS = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>report harness</title></head>
<body>
<pre id="result">pending</pre>
<iframe id="report" src="report.html" width="1400" height="900"></iframe>
<script>
document.getElementById("report").addEventListener("load", (event) => {
  const page = event.target.contentDocument;
  const images = Array.from(page.images, (img) => ({
    complete: img.complete, width: img.naturalWidth, height: img.naturalHeight, alt: img.alt,
  }));
  const fetched = event.target.contentWindow.performance
    .getEntriesByType("resource").map((entry) => entry.name);
  document.getElementById("result").textContent = JSON.stringify({
    title: page.title, images: images, fetched: fetched,
    sections: page.querySelectorAll("section.document").length,
  });
});
</script>
</body></html>
"""


def _dump_dom(url: str, profile: Path) -> str:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # CI containers run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def _seen(dom: str) -> dict[str, Any]:
    found = re.search(r'<pre id="result">(.*?)</pre>', dom, re.DOTALL)
    assert found is not None, dom[-2000:]
    text = html.unescape(found.group(1))
    assert text != "pending", "the report iframe never finished loading"
    seen: dict[str, Any] = json.loads(text)
    return seen


def test_every_chart_decodes_in_chromium(tmp_path: Path, static_site: str) -> None:
    rich, bare = tmp_path / "gpu.json", tmp_path / "cpu.json"
    rich.write_text(json.dumps(make_document()))
    bare.write_text(json.dumps(make_document("bert-base", "cpu", rich=False)))
    write_report([rich, bare], tmp_path / "report.html")
    (tmp_path / "harness.html").write_text(HARNESS)

    seen = _seen(_dump_dom(f"{static_site}/harness.html", tmp_path / "chromium-profile"))

    assert seen["title"] == "inferpack report: resnet50 on cuda:0, bert-base on cpu"
    assert seen["sections"] == 2
    assert seen["fetched"] == []  # self-contained: nothing loaded besides the page
    images = seen["images"]
    assert len(images) == len(ALL_PLOTS)
    for image in images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
        assert image["alt"]


def test_mixed_bench_and_loadtest_report_decodes_in_chromium(
    tmp_path: Path, static_site: str
) -> None:
    from tests.unit.test_report_loadtest import make_loadtest

    paths = []
    for name, document in (
        ("bench.json", make_document()),
        ("closed.json", make_loadtest()),
        ("open.json", make_loadtest("open", "<b>bold</b>")),
    ):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(document))
    write_report(paths, tmp_path / "report.html")
    (tmp_path / "harness.html").write_text(HARNESS)

    seen = _seen(_dump_dom(f"{static_site}/harness.html", tmp_path / "chromium-profile"))

    assert seen["title"] == (
        "inferpack report: resnet50 on cuda:0, loadtest 2 models over http-binary, closed loop, "
        "loadtest 2 models over http-binary, open loop"
    )
    assert seen["sections"] == 3
    assert seen["fetched"] == []
    images = seen["images"]
    assert len(images) == len(ALL_PLOTS) + 2  # the bench charts, the curve, achieved vs target
    for image in images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
        assert image["alt"]
    assert any("throughput in requests per second" in image["alt"] for image in images)
