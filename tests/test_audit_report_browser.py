"""Open an audit's ``report.html`` in real headless Chromium (Debian's package, installed by ``.ci/run``).

No WebDriver is needed: the test copies the report, appends a small script that waits until every
``<img>`` has finished loading, checks each thumbnail's ``naturalWidth``, clicks the "Reject" filter and
counts the visible items, then writes its findings into the page; ``chromium --dump-dom`` prints the page
as it stands after the script ran. The report's own Content-Security-Policy allows inline scripts only,
so the page provably loads nothing from outside.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_audit import build_dataset, sq_vault  # noqa: F401 - sq_vault is a fixture

from sigvault.audit import run_audit

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
]

PROBE = """
<script>
(function () {
  function finish() {
    var imgs = Array.prototype.slice.call(document.images);
    var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                     .map(function (i) { return i.alt || i.getAttribute('data-ref') || '?'; });
    var items = Array.prototype.slice.call(document.querySelectorAll('article.item'));
    var visible = function () { return items.filter(function (el) { return !el.hidden && el.offsetParent !== null; }); };
    var before = visible().length;
    document.querySelector('button[data-filter="reject"]').click();
    var rejects = visible();
    var onlyRejects = rejects.every(function (el) { return el.getAttribute('data-decision') === 'reject'; });
    var shownText = document.getElementById('shown').textContent;
    document.querySelector('button[data-filter="all"]').click();
    var after = visible().length;
    var out = document.createElement('pre');
    out.id = 'probe-result';
    out.textContent = JSON.stringify({
      images: imgs.length, broken: broken, minWidth: Math.min.apply(null, imgs.map(function (i) { return i.naturalWidth; })),
      items: items.length, visibleBefore: before, visibleRejects: rejects.length, onlyRejects: onlyRejects,
      shownText: shownText, visibleAfter: after, headerHeight: document.querySelector('header').offsetHeight
    });
    document.body.appendChild(out);
  }
  function wait(tries) {
    var pending = Array.prototype.some.call(document.images, function (i) { return !i.complete; });
    if (pending && tries > 0) { setTimeout(function () { wait(tries - 1); }, 50); } else { finish(); }
  }
  window.addEventListener('load', function () { wait(100); });
})();
</script>
"""


def _dump_dom(page: Path, profile: Path) -> str:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_report_renders_in_chromium(sq_vault, tmp_path: Path) -> None:  # noqa: F811
    data = build_dataset(sq_vault, tmp_path, persons=5, items=60)
    summary = run_audit(sq_vault, data.manifest, tmp_path / "out", batch_size=16)
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(report.replace("</body>", PROBE + "</body>"), encoding="utf-8")

    dom = _dump_dom(probe_page, tmp_path / "chromium-profile")
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run; page as rendered:\n{dom[:3000]}"
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))

    items = summary.counts["reject"] + summary.counts["refer"] + summary.counts["error"]
    assert result["items"] == items == summary.report_items
    assert summary.counts["reject"] > 0 and summary.counts["error"] > 0
    # every thumbnail loaded: the questioned images that can be read, and the references shown
    assert result["images"] >= items and result["broken"] == [] and result["minWidth"] > 0
    # the filter hides every non-reject item, and "All" brings them back
    assert result["visibleBefore"] == items
    assert result["visibleRejects"] == summary.counts["reject"] < items
    assert result["onlyRejects"] is True and result["shownText"] == str(summary.counts["reject"])
    assert result["visibleAfter"] == items
    assert result["headerHeight"] > 0
