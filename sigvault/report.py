"""``report.html`` of an audit: the review queue, in self-contained pages a reviewer reads at a glance.

Every item not accepted is in the report, in the order a reviewer works (:mod:`sigvault.audit.summary`):
referred items first, then rejects, then errors; the lowest probability of a genuine signature first within
each. A large audit's queue is split into pages of ``page_size`` items (``report.html``, ``report-2.html``,
...), each linked to the others and saying which pages hold which decision, so that a 1,000,000-row audit
gives pages a browser opens as quickly as a small one's.

Each item shows the questioned signature beside the person's references (the best match outlined), the
score against the threshold on a small bar, and the reason for an error. Buttons filter the page by
decision (``[hidden]`` wins over every ``display`` rule). Text wraps between words only: identifiers and
paths may also wrap after a separator (``/``, ``_``, ``-``, ``.``), never inside a run of letters and digits;
a run too long for its column is clipped, its full text in the tooltip. Everything is inline: CSS, a few lines
of JavaScript, and thumbnails as ``data:`` URIs (small greyscale WebP made with Pillow), so a page opens from
disk in any browser with no server and makes no request. A reference used by several items of a page is
embedded once (a JavaScript table fills in the ``<img>`` elements when the page loads).

Each decided item also carries its ``decision_id`` in the decision log and the reviewer's controls: Genuine
and Forged buttons (pressed again: cleared) and a reason. "Export outcomes CSV" writes, in the browser, the
file ``sigvault review import`` reads (``decision_id,outcome,reason,reviewer``, one line per item with an
outcome, in page order; the reviewer's name typed once in the header); leaving the page with outcomes chosen
but not exported asks first. Nothing is sent anywhere: the file is made by the page's own script.

The page holds no time of day, so an interrupted and resumed audit writes the same bytes as an
uninterrupted one but for the decision ids (positions in the log, which differ between two runs).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sigvault import imaging
from sigvault.audit.files import report_page_name
from sigvault.audit.summary import DECISIONS, REVIEW_ORDER
from sigvault.errors import SigvaultError

THUMB_SIZE = (220, 90)  # (width, height) box of a thumbnail
MAX_REFS_SHOWN = 6  # references shown per item (the most similar, best first)
SCORE_SPAN = 0.25  # the score bar spans threshold +- this


def thumbnail_uri(
    source: Path | str | bytes,
    *,
    limits: imaging.ImageLimits = imaging.DEFAULT_LIMITS,
    zone: Mapping[str, Any] | None = None,
    whole: bool = False,
    page: int | None = None,
) -> str | None:
    """A small WebP of an image as a ``data:`` URI, or None if the image cannot be read.

    The image is read with :func:`sigvault.imaging.read_image` (same checks and size limits as verify). With
    ``zone`` (a result's ``zone``: the box compared on a whole document, in its pixels): that zone alone, or with
    ``whole`` the whole document with the zone drawn on it in red (then in colour). ``page``: that page of a
    multi-page TIFF (a manifest's ``page`` column), which is refused without it.
    """
    from PIL import Image, ImageDraw

    try:
        grey = imaging.read_image(source, name="thumbnail", limits=limits, page=page)
    except SigvaultError:
        return None
    box = None
    if zone is not None:
        x, y, w, h = (int(zone[k]) for k in ("x", "y", "w", "h"))
        if whole:
            box = (x, y, x + w, y + h)
        else:
            grey = grey[y : y + h, x : x + w]
            if grey.size == 0:
                return None
    im = Image.fromarray(grey, mode="L")
    size = (2 * THUMB_SIZE[0], 2 * THUMB_SIZE[1]) if box is not None else THUMB_SIZE  # a document: larger
    scale = min(1.0, size[0] / im.width, size[1] / im.height)
    im.thumbnail(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    if box is not None:
        im = im.convert("RGB")
        drawn = [round(v * scale) for v in box]
        ImageDraw.Draw(im).rectangle(drawn, outline=(220, 30, 30), width=2)
    buf = io.BytesIO()
    im.save(buf, format="WEBP", quality=70, method=4)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# (source, zone, whole, page): thumbnail_uri's arguments
Thumb = tuple["Path | str | bytes", "Mapping[str, Any] | None", bool, "int | None"]


def _thumbnails(jobs: Sequence[Thumb], limits: imaging.ImageLimits) -> list[str | None]:
    """:func:`thumbnail_uri` of each (source, zone, whole, page) (source "" = none), in order, on two threads: decoding
    and encoding release the GIL, so a report's thumbnails take about half the wall time on two cores."""

    def one(job: Thumb) -> str | None:
        source, zone, whole, page = job
        return thumbnail_uri(source, limits=limits, zone=zone, whole=whole, page=page) if source else None

    if len(jobs) < 8 or (os.cpu_count() or 1) < 2:
        return [one(j) for j in jobs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="sigvault-thumb") as pool:
        return list(pool.map(one, jobs))


def _page(record: Mapping[str, Any]) -> int | None:
    """The page a result's manifest row chose (its ``page`` column, validated by the manifest), or None."""
    page = record.get("page")
    return int(page) if page not in (None, "") else None


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


_AFTER_SEPARATOR = re.compile(r"(?<=[/\\_.\-:@,;=])")


def _w(value: Any) -> str:
    """Escaped text that may wrap after a separator (an id, a path, an error naming a file), never mid-word."""
    return "<wbr>".join(_e(part) for part in _AFTER_SEPARATOR.split("" if value is None else str(value)))


def _pct(x: float) -> str:
    return f"{max(0.0, min(100.0, x)):.1f}%"


def _bar(record: Mapping[str, Any], refer_band: float) -> str:
    """Score against threshold: the refer band shaded, the threshold a tick, the score a dot."""
    score, threshold = record.get("score"), record.get("threshold")
    if score is None or threshold is None:
        return ""
    policy = record.get("policy") or {}
    effective = policy.get("effective_threshold") or threshold
    width = max(refer_band, policy.get("refer_band") or 0.0)
    lo, hi = effective - SCORE_SPAN, effective + SCORE_SPAN

    def pos(x: float) -> float:
        return (x - lo) / (hi - lo) * 100

    delta = score - effective
    return (
        f'<div class="bar" title="score {score:.4f}, threshold {effective:.4f}, refer band ±{width:.3f}">'
        f'<span class="band" style="left:{_pct(pos(effective - width))};width:{_pct(pos(effective + width) - pos(effective - width))}"></span>'
        f'<span class="thr" style="left:{_pct(pos(effective))}"></span>'
        f'<span class="dot {_e(record["decision"])}" style="left:{_pct(pos(score))}"></span></div>'
        f'<div class="nums">score {score:.3f} vs threshold {effective:.3f} ({delta:+.3f})</div>'
    )


CSS = """
:root{--accept:#1a7f37;--reject:#c62828;--refer:#b26a00;--error:#6a1b9a;--muted:#666;--line:#ddd}
*{box-sizing:border-box}[hidden]{display:none!important}body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#f6f7f9}
header{background:#fff;border-bottom:1px solid var(--line);padding:14px 20px;position:sticky;top:0;z-index:1}
h1{font-size:18px;margin:0 0 4px}.sub{color:var(--muted);margin:2px 0}
.chips span{display:inline-block;margin-right:10px}.chips b{font-variant-numeric:tabular-nums}
.filters{margin-top:8px}.filters button{font:inherit;border:1px solid var(--line);background:#fff;border-radius:14px;padding:3px 12px;margin-right:6px;cursor:pointer}
.filters button[aria-pressed=true]{background:#222;color:#fff;border-color:#222}
main{padding:12px 20px}.empty{color:var(--muted);padding:20px}
.item{display:grid;grid-template-columns:260px 240px minmax(0,1fr);gap:14px;background:#fff;border:1px solid var(--line);border-left:5px solid var(--muted);border-radius:6px;padding:10px;margin-bottom:10px}
.item.reject{border-left-color:var(--reject)}.item.refer{border-left-color:var(--refer)}.item.error{border-left-color:var(--error)}
.badge{display:inline-block;color:#fff;border-radius:3px;padding:0 6px;font-weight:600;text-transform:uppercase;font-size:12px}
.badge.reject{background:var(--reject)}.badge.refer{background:var(--refer)}.badge.error{background:var(--error)}.badge.accept{background:var(--accept)}
.item>div{min-width:0;overflow:hidden}.pages a{color:#1565c0}
.id{font-weight:600}.meta{color:var(--muted);font-size:12px}.err{color:var(--error);font-size:12px}
.id,.meta,.err{word-break:normal;overflow-wrap:normal;hyphens:none;text-overflow:ellipsis}
.bar{position:relative;height:10px;background:#eee;border-radius:5px;margin:6px 0 2px}
.bar .band{position:absolute;top:0;bottom:0;background:#f3d9a4}.bar .thr{position:absolute;top:-3px;bottom:-3px;width:2px;background:#222}
.bar .dot{position:absolute;top:-2px;width:14px;height:14px;margin-left:-7px;border-radius:50%;border:2px solid #fff;background:var(--muted)}
.bar .dot.reject{background:var(--reject)}.bar .dot.refer{background:var(--refer)}.bar .dot.accept{background:var(--accept)}
.nums{font-size:12px;color:var(--muted);font-variant-numeric:tabular-nums}
figure{margin:0;display:inline-block;vertical-align:top;text-align:center;font-size:11px;color:var(--muted)}
figure img{display:block;background:#fff;border:1px solid var(--line);max-width:220px;max-height:90px}
.q img{border:1px solid #999}.refs figure{margin:0 6px 6px 0}.refs img{max-width:150px;max-height:62px}
.refs figure.best img{outline:3px solid #1565c0;outline-offset:1px}.refs figure.best figcaption{color:#1565c0;font-weight:600}
.noimg{display:inline-block;width:150px;height:62px;line-height:62px;border:1px dashed #bbb;color:#999;font-size:11px;text-align:center}
.outcomes{margin-top:8px;color:var(--muted)}.outcomes input{font:inherit;width:12em;margin:0 8px 0 4px}
.outcomes button,.review button{font:inherit;border:1px solid var(--line);background:#fff;border-radius:4px;padding:2px 10px;cursor:pointer}
.review{margin-top:8px;display:flex;flex-wrap:wrap;gap:6px;align-items:center}.review input{font:inherit;font-size:12px;flex:1 1 8em;min-width:0}
.review button[data-outcome=genuine][aria-pressed=true]{background:var(--accept);border-color:var(--accept);color:#fff}
.review button[data-outcome=forged][aria-pressed=true]{background:var(--reject);border-color:var(--reject);color:#fff}
"""

JS = r"""
(function(){
  var refs = JSON.parse(document.getElementById('ref-thumbs').textContent);
  document.querySelectorAll('img[data-ref]').forEach(function(img){ img.src = refs[img.getAttribute('data-ref')]; });
  var items = Array.prototype.slice.call(document.querySelectorAll('article.item'));
  var shown = document.getElementById('shown');
  document.querySelectorAll('.filters button').forEach(function(btn){
    btn.addEventListener('click', function(){
      var f = btn.getAttribute('data-filter'), n = 0;
      document.querySelectorAll('.filters button').forEach(function(b){ b.setAttribute('aria-pressed', String(b === btn)); });
      items.forEach(function(el){ var on = f === 'all' || el.getAttribute('data-decision') === f; el.hidden = !on; if (on) n++; });
      shown.textContent = String(n);
    });
  });
  // The reviewer's outcomes: a Genuine or Forged button per decided item (pressed again: cleared), a reason,
  // and a CSV for `sigvault review import` (decision_id, outcome, reason, reviewer), made here: no server.
  var chosen = document.getElementById('chosen'), dirty = false;
  function count() {
    chosen.textContent = String(document.querySelectorAll('.review button[aria-pressed=true]').length);
  }
  document.querySelectorAll('.review button').forEach(function(btn){
    btn.addEventListener('click', function(){
      var on = btn.getAttribute('aria-pressed') !== 'true';
      btn.parentNode.querySelectorAll('button').forEach(function(b){ b.setAttribute('aria-pressed', String(on && b === btn)); });
      dirty = true;
      count();
    });
  });
  document.querySelectorAll('.review input').forEach(function(el){ el.addEventListener('input', function(){ dirty = true; }); });
  function cell(value) {
    var v = String(value);
    return /[",\r\n]/.test(v) || /^\s|\s$/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
  }
  function oneLine(value) { return String(value).replace(/\s+/g, ' ').trim(); }
  window.sigvaultOutcomesCsv = function(){
    var reviewer = oneLine(document.getElementById('reviewer').value), lines = ['decision_id,outcome,reason,reviewer'];
    document.querySelectorAll('.review').forEach(function(box){
      var pressed = box.querySelector('button[aria-pressed=true]');
      if (pressed) {
        lines.push([box.getAttribute('data-decision-id'), pressed.getAttribute('data-outcome'),
                    oneLine(box.querySelector('input').value), reviewer].map(cell).join(','));
      }
    });
    return lines.join('\r\n') + '\r\n';
  };
  document.getElementById('export').addEventListener('click', function(){
    var blob = new Blob([window.sigvaultOutcomesCsv()], {type: 'text/csv;charset=utf-8'});
    var a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = document.body.getAttribute('data-outcomes-file');
    document.body.appendChild(a);
    a.click();
    a.remove();
    dirty = false;
  });
  window.addEventListener('beforeunload', function(e){ if (dirty && chosen.textContent !== '0') { e.preventDefault(); e.returnValue = ''; } });
})();
"""


def render_report(
    summary: Mapping[str, Any],
    queue: Sequence[tuple[int, Mapping[str, Any]]],
    *,
    reference_images: Callable[[Sequence[int]], Mapping[int, bytes]],
    limits: imaging.ImageLimits = imaging.DEFAULT_LIMITS,
) -> str:
    """The report page.

    Args:
        summary: ``manifest`` (name), ``rows``, ``counts`` (per decision), ``model``, ``policy`` (or None),
            ``needing_review`` (all items not accepted), ``refer_band`` (the model's), ``page`` (this page,
            from 1), ``pages``, ``page_size``.
        queue: (row index, result record) of this page's items, in review order.
        reference_images: reference id -> stored image bytes, for the ids asked.
        limits: image limits for reading the questioned images.
    """
    shown_refs: dict[int, None] = {}
    per_item: list[list[Mapping[str, Any]]] = []
    for _, record in queue:
        refs = sorted(record.get("references") or [], key=lambda r: (-r["similarity"], r["reference_id"]))[
            :MAX_REFS_SHOWN
        ]
        per_item.append(refs)
        shown_refs.update(dict.fromkeys(r["reference_id"] for r in refs))
    blobs = reference_images(list(shown_refs)) if shown_refs else {}
    ref_ids = [r for r in shown_refs if r in blobs]
    questioned: list[Thumb] = [
        (record.get("source") or "", record.get("zone"), False, _page(record)) for _, record in queue
    ]
    documents: list[Thumb] = [(s, z, True, p) for s, z, _, p in questioned if z]  # whole documents, the zone drawn
    uris = _thumbnails([(blobs[r], None, False, None) for r in ref_ids] + questioned + documents, limits)
    thumbs = {str(r): uri for r, uri in zip(ref_ids, uris) if uri is not None}
    q_uris = uris[len(ref_ids) : len(ref_ids) + len(questioned)]
    more = iter(uris[len(ref_ids) + len(questioned) :])
    d_uris = [next(more) if z else None for _, z, _, _ in questioned]

    counts = summary["counts"]
    in_report = {d: sum(1 for _, r in queue if r["decision"] == d) for d in REVIEW_ORDER}
    refer_band = float(summary.get("refer_band") or 0.0)
    page, pages, page_size = int(summary.get("page", 1)), int(summary.get("pages", 1)), int(summary.get("page_size", 0))
    first = (page - 1) * page_size
    cards = [
        _card(rank, index, record, refs, thumbs, q_uri, refer_band, d_uri)
        for rank, ((index, record), refs, q_uri, d_uri) in enumerate(
            zip(queue, per_item, q_uris, d_uris, strict=True), start=first + 1
        )
    ]

    needing = summary["needing_review"]
    if needing == 0:
        scope = "No item needs review: every item was accepted."
    elif pages == 1:
        scope = f"All {needing:,} items needing review: referred first, then rejects, then errors."
    else:
        scope = (
            f"Items {first + 1:,} to {first + len(queue):,} of the {needing:,} needing review (referred first, then "
            f"rejects, then errors), page {page:,} of {pages:,}."
        )
    policy = summary.get("policy")
    policy_text = (
        f"policy {_e(policy['name'])} (sha256 {_e(policy['sha256'][:12])}…; bands {', '.join(_e(b['name']) for b in policy['bands'])})"
        if policy
        else "no policy (the model's decisions)"
    )
    buttons = [f'<button data-filter="all" aria-pressed="true">All <b>{len(queue)}</b></button>'] + [
        f'<button data-filter="{d}" aria-pressed="false">{d.capitalize()} <b>{in_report[d]}</b></button>'
        for d in REVIEW_ORDER
    ]
    ref_json = json.dumps(thumbs, sort_keys=True).replace("</", "<\\/")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>sigvault audit: {_e(summary['manifest'])}</title><style>{CSS}</style></head>"
        f'<body data-outcomes-file="{_e(outcomes_file_name(summary["manifest"], page))}">\n'
        "<header>"
        f"<h1>Review queue: {_e(summary['manifest'])}</h1>"
        '<div class="chips">'
        f"<span><b>{summary['rows']:,}</b> items</span>"
        + "".join(
            f'<span><span class="badge {d}">{d}</span> <b>{counts.get(d, 0):,}</b></span>'
            for d in DECISIONS
        )
        + "</div>"
        f'<p class="sub">{_e(scope)} Visible now: <b id="shown">{len(queue)}</b>.</p>'
        + _page_links(page, pages, page_size, counts)
        + (
            f'<p class="sub">{summary["capture_mismatch"]:,} item(s) scanned at another resolution than their '
            "references (coarser or finer): their rejections near the threshold are referred; see the capture "
            "note on each.</p>"
            if summary.get("capture_mismatch")
            else ""
        )
        + f'<p class="sub">model {_e(summary["model"])} · {policy_text}</p>'
        f'<div class="filters" role="group" aria-label="Filter by decision">{"".join(buttons)}</div>'
        + _outcome_controls(queue)
        + "</header>\n<main>\n"
        + ("\n".join(cards) if cards else '<p class="empty">Nothing to review.</p>')
        + "\n</main>\n"
        f'<script type="application/json" id="ref-thumbs">{ref_json}</script>\n'
        f"<script>{JS}</script>\n</body></html>\n"
    )


def outcomes_file_name(manifest: str, page: int) -> str:
    """The name the "Export outcomes CSV" button gives its file: ``outcomes-<manifest stem>[-page-N].csv``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(manifest)).stem).strip("._") or "audit"
    return f"outcomes-{stem}{f'-page-{page}' if page > 1 else ''}.csv"


def _outcome_controls(queue: Sequence[tuple[int, Mapping[str, Any]]]) -> str:
    """The reviewer's name and the export button, when the page holds a decided item to review."""
    if not any(record.get("decision_id") for _, record in queue):
        return ""
    return (
        '<div class="outcomes">Reviewer<input id="reviewer" type="text" autocomplete="name" '
        'aria-label="reviewer (recorded with each outcome)"><button id="export" type="button">Export outcomes CSV</button> '
        '<b id="chosen">0</b> outcome(s) chosen; import the file with <code>sigvault review import FILE</code>.</div>'
    )


def _page_links(page: int, pages: int, page_size: int, counts: Mapping[str, int]) -> str:
    """Previous / next page, and the pages each decision is on (the queue holds them in :data:`REVIEW_ORDER`)."""
    if pages <= 1:
        return ""

    def link(p: int, text: str) -> str:
        return text if p == page else f'<a href="{report_page_name(p)}">{text}</a>'

    sections, start = [], 0
    for d in REVIEW_ORDER:
        n = counts.get(d, 0)
        if n:
            lo, hi = start // page_size + 1, (start + n - 1) // page_size + 1
            where = link(lo, f"page {lo:,}") if lo == hi else f"pages {link(lo, f'{lo:,}')}&nbsp;to&nbsp;{link(hi, f'{hi:,}')}"
            sections.append(f"{d} {where}")
        start += n
    nav = [link(page - 1, "previous page") if page > 1 else "", link(page + 1, "next page") if page < pages else ""]
    return (
        f'<p class="sub pages">Page {page:,} of {pages:,} ({page_size:,} items a page; filters apply to this page). '
        f"{' · '.join(sections)}. {' · '.join(n for n in nav if n)}</p>"
    )


def _card(
    rank: int,
    index: int,
    record: Mapping[str, Any],
    refs: Sequence[Mapping[str, Any]],
    thumbs: Mapping[str, str],
    q_uri: str | None,
    refer_band: float,
    d_uri: str | None = None,
) -> str:
    decision = record["decision"]
    zone = record.get("zone")
    caption = "questioned, the zone compared" if zone else "questioned"
    questioned = (
        f'<figure class="q"><img alt="questioned signature of item {_e(record["item_id"])}" src="{q_uri}"><figcaption>{caption}</figcaption></figure>'
        if q_uri
        else f'<figure class="q"><span class="noimg">image unreadable</span><figcaption>{caption}</figcaption></figure>'
    )
    if zone:
        where = f"zone {zone['x']},{zone['y']},{zone['w']},{zone['h']} ({_e(zone.get('how'))})"
        document = (
            f'<img alt="document of item {_e(record["item_id"])} with the zone compared boxed" src="{d_uri}">'
            if d_uri
            else '<span class="noimg">image unreadable</span>'
        )
        questioned = f'<figure class="q doc">{document}<figcaption>document, {where}</figcaption></figure>' + questioned
    best = (record.get("best_reference") or {}).get("reference_id")
    ref_html = []
    for ref in refs:
        rid = ref["reference_id"]
        cls = ' class="best"' if rid == best else ""
        caption = f"{'best ' if rid == best else ''}{ref['similarity']:.3f}"
        img = (
            f'<img alt="reference {rid}" data-ref="{rid}">'
            if str(rid) in thumbs
            else '<span class="noimg">reference unavailable</span>'
        )
        ref_html.append(f"<figure{cls}>{img}<figcaption>{_e(caption)}</figcaption></figure>")
    if not ref_html:
        ref_html.append('<span class="meta">no references compared</span>')
    p = record.get("probability")
    policy = record.get("policy") or {}
    meta = [f"person {_w(record.get('person'))}", f"row {index + 1}"]
    if record.get("decision_id"):
        meta.append(f"decision {int(record['decision_id'])}")
    if record.get("amount") not in (None, ""):
        meta.append(f"amount {_e(record.get('amount'))}")
    if policy:
        meta.append(f"policy band {_w(policy.get('band'))}")
    if record.get("model_decision") not in (None, decision):
        meta.append(f"model alone: {_e(record.get('model_decision'))}")
    if record.get("capture_ratio") is not None:  # scoring.capture_guard: a rejection near the threshold referred
        ratio = float(record["capture_ratio"])
        meta.append(f"scanned {'coarser' if ratio > 1 else 'finer'} than the references (ink scale x{ratio:.2f})")
    lines = [
        f'<div><span class="badge {_e(decision)}">{_e(decision)}</span> <span class="meta">#{rank}</span></div>',
        f'<div class="id" title="{_e(record["item_id"])}">{_w(record["item_id"])}</div>',
        f'<div class="meta">{" · ".join(meta)}</div>',
    ]
    if p is not None:
        lines.append(f'<div class="nums">P(genuine) {p * 100:.1f} %</div>')
    lines.append(_bar(record, refer_band))
    if decision == "error":
        lines.append(f'<div class="err">{_w(record.get("error_kind"))}: {_w(record.get("error"))}</div>')
    elif record.get("decision_id"):
        did = int(record["decision_id"])
        lines.append(
            f'<div class="review" data-decision-id="{did}" role="group" aria-label="reviewer outcome of decision {did}">'
            '<button type="button" data-outcome="genuine" aria-pressed="false">Genuine</button>'
            '<button type="button" data-outcome="forged" aria-pressed="false">Forged</button>'
            f'<input type="text" placeholder="reason" aria-label="reason for decision {did}"></div>'
        )
    return (
        f'<article class="item {_e(decision)}" data-decision="{_e(decision)}" data-item="{_e(record["item_id"])}">'
        f'<div>{"".join(lines)}</div><div>{questioned}</div><div class="refs">{"".join(ref_html)}</div></article>'
    )
