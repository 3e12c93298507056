"""Open an audit's ``report.html`` in real headless Chromium (Debian's package, installed by ``.ci/run``).

No WebDriver is needed: the test copies the report, appends a small script that waits until every
``<img>`` has finished loading and then measures what the browser DRAWS (never what an attribute says):

- an item counts as shown when it has a layout box (``offsetParent``) and a non-zero height
  (``getBoundingClientRect``), so a filter whose ``hidden`` attribute is overridden by CSS fails;
- the order of the drawn items, top to bottom (referred first, then rejects, then errors);
- every run of letters and digits in an item is drawn on one line (no text wrapped mid-word), measured
  with a DOM ``Range`` per word;
- an item's three columns (text, questioned image, references) sit side by side inside the card.

A second probe plays the reviewer: presses Genuine and Forged on items (and again, to clear or change one),
types a reason and the reviewer's name, presses "Export outcomes CSV" and keeps the file's bytes, which
``sigvault review import`` then records in the decision log.

The findings are written into the page; ``chromium --dump-dom`` prints the page as it stands after the
script ran. The report's own Content-Security-Policy allows inline scripts only, so the page provably
loads nothing from outside.
"""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import FakeEmbedder
from test_audit import build_dataset, sq_vault  # noqa: F401 - sq_vault is a fixture

from sigvault.audit import report_page_name, run_audit
from sigvault.scoring import ScoringConfig

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
]

PROBE = """
<script>
(function () {
  function drawn(el) {
    var r = el.getBoundingClientRect();
    return el.offsetParent !== null && r.height > 0 && r.width > 0 && getComputedStyle(el).visibility !== 'hidden';
  }
  function shown() {
    return Array.prototype.slice.call(document.querySelectorAll('article.item')).filter(drawn)
      .sort(function (a, b) { return a.getBoundingClientRect().top - b.getBoundingClientRect().top; })
      .map(function (el) { return el.getAttribute('data-decision'); });
  }
  function brokenWords() {
    var out = [];
    document.querySelectorAll('article.item').forEach(function (item) {
      var walker = document.createTreeWalker(item, NodeFilter.SHOW_TEXT);
      for (var node = walker.nextNode(); node; node = walker.nextNode()) {
        var re = /[A-Za-z0-9]+/g, m;
        while ((m = re.exec(node.data)) !== null) {
          var range = document.createRange();
          range.setStart(node, m.index);
          range.setEnd(node, m.index + m[0].length);
          var tops = {};
          Array.prototype.forEach.call(range.getClientRects(), function (r) { if (r.width > 0) tops[Math.round(r.top)] = 1; });
          if (Object.keys(tops).length > 1) out.push(m[0]);
        }
      }
    });
    return out;
  }
  function overlaps() {
    var bad = [];
    document.querySelectorAll('article.item').forEach(function (item) {
      var box = item.getBoundingClientRect(), cols = item.children, prev = null;
      for (var i = 0; i < cols.length; i++) {
        var r = cols[i].getBoundingClientRect();
        if (r.left < box.left - 1 || r.right > box.right + 1 || (prev && r.left < prev.right - 1)) {
          bad.push(item.getAttribute('data-item') + ' column ' + i);
        }
        prev = r;
      }
    });
    return bad;
  }
  function finish() {
    var imgs = Array.prototype.slice.call(document.images);
    var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                     .map(function (i) { return i.alt || i.getAttribute('data-ref') || '?'; });
    var result = {
      images: imgs.length, broken: broken,
      minWidth: Math.min.apply(null, imgs.map(function (i) { return i.naturalWidth; })),
      items: document.querySelectorAll('article.item').length,
      before: shown(), brokenWords: brokenWords(), overlaps: overlaps(),
      headerHeight: document.querySelector('header').getBoundingClientRect().height, filters: {}
    };
    ['refer', 'reject', 'error', 'all'].forEach(function (f) {
      document.querySelector('button[data-filter="' + f + '"]').click();
      result.filters[f] = {drawn: shown(), shownText: document.getElementById('shown').textContent};
    });
    var out = document.createElement('pre');
    out.id = 'probe-result';
    out.textContent = JSON.stringify(result);
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


@pytest.fixture
def embedder() -> FakeEmbedder:
    """A wide refer band, so the audit has referred items as well as rejects and errors."""
    return FakeEmbedder(scoring=ScoringConfig(refer_band=0.08))


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
        "--window-size=1000,800",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _long_ids(data) -> None:  # noqa: ANN001
    """Item ids as long as a bank's (longer than the card's first column is wide), and a long error path."""
    with open(data.manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, data.columns)
        writer.writeheader()
        for row in data.rows:
            row = dict(row)
            row["item_id"] = f"CHEQUE-2024-BRANCH-ZURICH-HAUPTSITZ-SCHALTER-{row['item_id']}"
            if row["image"] == "images/missing.png":
                row["image"] = "images/scans_of_the_night_batch_from_the_branch_office/missing_cheque_scan.png"
            writer.writerow(row)


def _probe(report: Path, tmp_path: Path) -> dict:
    probe_page = report.with_name("probe-" + report.name)
    probe_page.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _dump_dom(probe_page, tmp_path / "chromium-profile")
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run; page as rendered:\n{dom[:3000]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


def test_report_draws_what_its_filters_say(sq_vault, tmp_path: Path) -> None:  # noqa: F811
    data = build_dataset(sq_vault, tmp_path, persons=5, items=60)
    _long_ids(data)
    summary = run_audit(sq_vault, data.manifest, tmp_path / "out", batch_size=16)
    result = _probe(tmp_path / "out" / "report.html", tmp_path)

    counts = summary.counts
    assert counts["reject"] > 0 and counts["refer"] > 0 and counts["error"] == 6
    items = counts["reject"] + counts["refer"] + counts["error"]
    assert result["items"] == items == summary.report_items
    # every thumbnail loaded: the questioned images that can be read, and the references shown
    assert result["images"] >= items and result["broken"] == [] and result["minWidth"] > 0
    # drawn top to bottom in the order a reviewer works: referred, then rejects, then errors
    expected = ["refer"] * counts["refer"] + ["reject"] * counts["reject"] + ["error"] * counts["error"]
    assert result["before"] == expected
    # each filter draws exactly its items, and "All" brings every item back
    for f in ("refer", "reject", "error"):
        assert result["filters"][f] == {"drawn": [f] * counts[f], "shownText": str(counts[f])}
    assert result["filters"]["all"] == {"drawn": expected, "shownText": str(items)}
    # no word broken across lines (ids, paths in error messages, captions), columns side by side
    assert result["brokenWords"] == []
    assert result["overlaps"] == []
    assert result["headerHeight"] > 0


def test_every_page_of_a_paged_report_opens(sq_vault, tmp_path: Path) -> None:  # noqa: F811
    """A report paged at 6 items: each page draws its own items, in review order across the pages."""
    data = build_dataset(sq_vault, tmp_path, persons=5, items=60)
    summary = run_audit(sq_vault, data.manifest, tmp_path / "out", batch_size=16, report_page_size=6)
    items = summary.counts["reject"] + summary.counts["refer"] + summary.counts["error"]
    assert len(list((tmp_path / "out").glob("report*.html"))) == summary.report_pages == -(-items // 6) == 3
    drawn: list[str] = []
    for k in range(1, summary.report_pages + 1):
        result = _probe(tmp_path / "out" / report_page_name(k), tmp_path)
        assert result["broken"] == [] and result["brokenWords"] == [] and result["overlaps"] == []
        assert result["filters"]["all"]["drawn"] == result["before"]
        drawn += result["before"]
    assert drawn == ["refer"] * summary.counts["refer"] + ["reject"] * summary.counts["reject"] + ["error"] * 6


EXPORT_PROBE = """
<script>
(function () {
  function drawn(el) {
    var r = el.getBoundingClientRect();
    return el.offsetParent !== null && r.height > 0 && r.width > 0 && getComputedStyle(el).visibility !== 'hidden';
  }
  window.addEventListener('load', function () {
    var boxes = document.querySelectorAll('.review');
    var result = {boxes: boxes.length, buttonsDrawn: Array.prototype.every.call(document.querySelectorAll('.review button'), drawn),
                  exportDrawn: drawn(document.getElementById('export')), picked: []};
    function press(k, outcome) { boxes[k].querySelector('button[data-outcome="' + outcome + '"]').click(); }
    press(0, 'genuine');
    var reason = boxes[0].querySelector('input');
    reason.value = '  matches the card,\\tpen "pressure" too ';
    reason.dispatchEvent(new Event('input'));
    press(1, 'forged');
    press(2, 'genuine'); press(2, 'genuine');  // pressed again: cleared
    press(3, 'forged'); press(3, 'genuine');   // changed
    for (var k = 0; k < 4; k++) { result.picked.push(boxes[k].getAttribute('data-decision-id')); }
    document.getElementById('reviewer').value = 'j.meier';
    result.chosen = document.getElementById('chosen').textContent;
    // the export's Blob and the download link it clicks are observed, the link not followed: headless Chromium
    // may exit before a real download lands on disk
    var blobs = [], links = [];
    var create = URL.createObjectURL, click = HTMLAnchorElement.prototype.click;
    URL.createObjectURL = function (b) { blobs.push(b); return create.call(URL, b); };
    HTMLAnchorElement.prototype.click = function () { links.push(this); };
    document.getElementById('export').click();
    HTMLAnchorElement.prototype.click = click;
    result.download = links.length === 1 ? links[0].download : links.length;
    result.href = links.length === 1 ? links[0].href.slice(0, 5) : null;
    result.type = blobs.length ? blobs[0].type : null;
    (blobs.length ? blobs[0].text() : Promise.resolve(null)).then(function (text) {
      result.csv = text;
      var out = document.createElement('pre');
      out.id = 'probe-result';
      out.textContent = JSON.stringify(result);
      document.body.appendChild(out);
    });
  });
})();
</script>
"""


def test_outcomes_clicked_in_the_report_are_exported_and_imported(sq_vault, tmp_path: Path, monkeypatch) -> None:  # noqa: F811, ANN001
    """Click Genuine / Forged on the report's items, type a reason and the reviewer, export the CSV in the browser,
    then `sigvault review import` it: the log holds the three reviews with the reviewer and reason, intact."""
    from typer.testing import CliRunner

    from sigvault.cli import app

    data = build_dataset(sq_vault, tmp_path, persons=5, items=60)
    summary = run_audit(sq_vault, data.manifest, tmp_path / "out", batch_size=16)
    report = tmp_path / "out" / "report.html"
    page = report.with_name("probe-export.html")
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", EXPORT_PROBE + "</body>"), encoding="utf-8")
    dom = _dump_dom(page, tmp_path / "chromium-profile")
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run; page as rendered:\n{dom[:3000]}"
    result = json.loads(html.unescape(found.group(1)))
    exported = tmp_path / result["download"]  # the bytes the browser saves, as the reviewer's file
    exported.write_bytes(result["csv"].encode("utf-8"))

    # every decided item (referred and rejected: not the errors) has its buttons, drawn
    assert result["boxes"] == summary.counts["refer"] + summary.counts["reject"]
    assert result["buttonsDrawn"] and result["exportDrawn"] and result["chosen"] == "3"
    entries = {e.id: e for e in sq_vault.log_entries() if e.kind == "audit"}
    a, b, _, d = (int(x) for x in result["picked"])
    assert all(entries[x].details["audit"] == summary.audit_id for x in (a, b, d))
    assert result["type"] == "text/csv;charset=utf-8"
    assert result["download"] == "outcomes-manifest.csv" and result["href"] == "blob:"
    assert result["csv"] == (
        "decision_id,outcome,reason,reviewer\r\n"
        f'{a},genuine,"matches the card, pen ""pressure"" too",j.meier\r\n'
        f"{b},forged,,j.meier\r\n"
        f"{d},genuine,,j.meier\r\n"
    )

    env = {"SIGVAULT_HOME": str(sq_vault.home), "SIGVAULT_DATABASE_URL": str(sq_vault.engine.url)}
    out = CliRunner().invoke(app, ["--operator", "back-office", "review", "import", str(exported)], env=env)
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[0].startswith(f"recorded 3 outcome(s) from {exported} (log entries ")
    reviews = [e for e in sq_vault.log_entries() if e.kind == "review"]
    assert [(e.details["decision_id"], e.decision, e.operator, e.reason, e.details["item_id"]) for e in reviews] == [
        (a, "genuine", "j.meier", 'matches the card, pen "pressure" too', entries[a].details["item_id"]),
        (b, "forged", "j.meier", None, entries[b].details["item_id"]),
        (d, "genuine", "j.meier", None, entries[d].details["item_id"]),
    ]
    assert all(e.details["audit"] == summary.audit_id and e.details["imported_by"] == "back-office" for e in reviews)
    assert sq_vault.log_verify().ok
