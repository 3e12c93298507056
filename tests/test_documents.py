"""Whole documents: synthetic cheques (sigvault.cheques), regions and layouts (sigvault.documents), and the
located signature (sigvault.locate)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sigvault import cheques
from sigvault.documents import load_layouts, looks_like_document, parse_region, signature_source
from sigvault.errors import NoSignatureFoundError, UsageError
from sigvault.imaging import read_image
from sigvault.locate import locate_signature
from sigvault.synth import SyntheticWriter


def _hands(k: int) -> tuple[np.ndarray, list[np.ndarray]]:
    return np.asarray(SyntheticWriter(k).genuine(0)), [np.asarray(SyntheticWriter(1000 + 3 * k + j).genuine(0)) for j in range(3)]


@pytest.mark.parametrize(("rendering", "fmt", "mode", "dpi"), [("bitonal", "TIFF", "1", 200), ("colour", "JPEG", "RGB", 200)])
def test_cheques_are_rendered_as_clearing_systems_deliver_them(rendering, fmt, mode, dpi):
    sig, others = _hands(1)
    doc = cheques.render(sig, others, rendering, 7)
    assert doc.data == cheques.render(sig, others, rendering, 7).data  # seeded
    with Image.open(io.BytesIO(doc.data)) as im:
        assert (im.format, im.mode, im.size) == (fmt, mode, (1200, 550))
        assert round(im.info["dpi"][0]) == dpi
        if fmt == "TIFF":
            assert im.info["compression"] == "group4"
    s = doc.signature
    assert 700 <= s.x0 < s.x1 <= 1170 and 250 <= s.y0 < s.y1 <= 460  # on the signature line, lower right
    assert all(f.iou(s) == 0 for f in doc.fields.values())


def test_a_grey_cheque_is_a_jpeg_at_100_to_200_dpi_with_its_boxes_scaled():
    sig, others = _hands(2)
    for seed in range(6):
        doc = cheques.render(sig, others, "grey", seed)
        with Image.open(io.BytesIO(doc.data)) as im:
            assert im.format == "JPEG" and im.mode == "L" and doc.dpi in (100, 120, 150, 200)
            assert im.size == (round(1200 * doc.dpi / 200), round(550 * doc.dpi / 200))
            assert doc.signature.x1 <= im.size[0] and doc.signature.y1 <= im.size[1]


def test_regions_in_pixels_or_percentages():
    assert parse_region("700,300,470,145", 1200, 550).box == (700, 300, 1170, 445)
    assert parse_region("50%,50%,50%,50%", 1200, 550).box == (600, 275, 1200, 550)
    assert parse_region("1000,500,900,900", 1200, 550).box == (1000, 500, 1200, 550)  # clipped to the image


@pytest.mark.parametrize(("text", "message"), [
    ("1,2,3", "give X,Y,W,H in pixels or percentages"),
    ("a,2,3,4", "'a' is not a number"),
    ("-5,2,30,40", "'-5' must be a number >= 0"),
    ("1300,0,50,50", "outside the 1200x550 image"),
    ("0,0,5,40", "under 8 px"),
])
def test_malformed_regions_are_usage_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse_region(text, 1200, 550)


def test_layouts_file(tmp_path):
    path = tmp_path / "layouts.toml"
    path.write_text('[[layout]]\nname = "cheque"\nzone = "58%,54%,40%,27%"\ndpi = 200\n')
    layouts = load_layouts(path)
    assert layouts["cheque"].zone == "58%,54%,40%,27%" and layouts["cheque"].dpi == 200
    path.write_text('[[layout]]\nname = "cheque"\nzone = "1,2,3"\n')
    with pytest.raises(UsageError, match="layout cheque: zone '1,2,3'"):
        load_layouts(path)
    path.write_text("[[layout]]\nzone = '1,2,30,40'\n")
    with pytest.raises(UsageError, match="layout 1 needs a name and a zone"):
        load_layouts(path)
    with pytest.raises(UsageError, match="no layouts file"):
        load_layouts(tmp_path / "missing.toml")


def test_a_signature_box_is_used_whole_and_a_cheque_is_a_document():
    sig, others = _hands(3)
    assert not looks_like_document(sig)
    assert signature_source(sig, name="sig.png") == (None, None, "whole")
    for rendering in cheques.RENDERINGS:
        assert looks_like_document(read_image(cheques.render(sig, others, rendering, 3).data))


def test_a_region_or_a_layout_crops_the_document():
    sig, others = _hands(4)
    grey = read_image(cheques.render(sig, others, "colour", 4).data)
    data, box, how = signature_source(grey, name="c.jpg", region="700,300,470,145")
    assert how == "region" and box.box == (700, 300, 1170, 445)
    np.testing.assert_array_equal(read_image(data), grey[300:445, 700:1170])
    from sigvault.documents import Layout

    _, box, how = signature_source(grey, name="c.jpg", layout=Layout("cheque", "58.33%,54.55%,39.17%,26.36%"))
    assert how == "layout" and box.box == (700, 300, 1170, 445)
    with pytest.raises(UsageError, match="not both"):
        signature_source(grey, name="c.jpg", region="1,1,20,20", layout=Layout("x", "1,1,20,20"))


def test_the_signature_is_located_on_most_synthetic_cheques():
    """The located box overlaps the true signature with IoU >= 0.7 on at least 28 of 30 synthetic cheques (10 per
    rendering; 29 when written; training.cheque_eval measures it on real scans) and never takes the payee or the
    amount."""
    good = wrong = 0
    for k in range(10):
        sig, others = _hands(k)
        for rendering in cheques.RENDERINGS:
            doc = cheques.render(sig, others, rendering, k)
            try:
                found = cheques.Box(*locate_signature(read_image(doc.data)).box)
            except NoSignatureFoundError:
                continue
            good += doc.signature.iou(found) >= 0.7
            wrong += any(f.iou(found) >= 0.3 for f in doc.fields.values())
    assert good >= 28 and wrong == 0


def test_a_page_without_handwriting_is_refused():
    page = np.full((550, 1200), 235, np.uint8)
    with pytest.raises(NoSignatureFoundError, match=r"blank\.png: no handwriting found on the document; give --region or --layout"):
        locate_signature(page, name="blank.png")


def _signed_page(k: int = 3, at: tuple[int, int] = (640, 300)) -> tuple[np.ndarray, cheques.Box]:
    """A blank 200-dpi cheque-sized page with printed text up top, a signature line, and synthetic writer
    ``k``'s signature standing on that line; returns the page and the signature's true ink box."""
    import cv2

    page = np.full((550, 1200), 235, np.uint8)
    for row, text in ((60, "FIRST PROVINCIAL BANK"), (200, "PAY TO THE ORDER OF")):
        cv2.putText(page, text, (40, row), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 30, 1, cv2.LINE_AA)
    sig = np.asarray(SyntheticWriter(k).genuine(0))
    ys, xs = np.nonzero(sig < 128)
    sig = sig[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    scale = 110 / sig.shape[0]
    sig = cv2.resize(sig, (round(sig.shape[1] * scale), 110), interpolation=cv2.INTER_AREA)
    x, y = at
    h, w = sig.shape
    page[y : y + h, x : x + w] = np.minimum(page[y : y + h, x : x + w], sig)
    cv2.line(page, (600, y + h + 2), (1160, y + h + 2), 20, 2)  # the signature line, printed
    ys, xs = np.nonzero(page[y : y + h, x : x + w] < 128)
    return page, cheques.Box(x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1)


def test_a_stamp_that_the_signature_crosses_is_left_out_of_its_box():
    """A round stamp whose ring the signature's strokes touch: its rings and its text are erased, so the box is
    the signature's (before, the stamp joined the signature in one component and widened the box)."""
    import cv2

    page, truth = _signed_page()
    clean = cheques.Box(*locate_signature(page).box)
    centre = (truth.x0 - 30, (truth.y0 + truth.y1) // 2 - 20)
    cv2.circle(page, centre, 60, 40, 4)
    cv2.circle(page, centre, 48, 40, 2)
    cv2.putText(page, "PAID", (centre[0] - 30, centre[1] + 8), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 40, 2)
    stamped = cheques.Box(*locate_signature(page).box)
    assert clean.iou(truth) >= 0.9
    assert stamped.iou(truth) >= 0.8 and stamped.x0 >= truth.x0 - 10


def test_a_long_straight_pen_stroke_is_kept_but_a_printed_rule_is_not():
    """A signature's tail drawn almost level for 300 px is a pen stroke (its edge bends by a few pixels) and stays
    in the box; the printed signature line under it, exactly level, is erased, with the blurred scraps of its
    edges."""
    import cv2

    page, truth = _signed_page()
    tail = np.array([[truth.x1 - 5, truth.y1 - 30], [truth.x1 + 120, truth.y1 - 26], [truth.x1 + 300, truth.y1 - 31]])
    cv2.polylines(page, [tail.reshape(-1, 1, 2).astype(np.int32)], False, 30, 3, cv2.LINE_AA)
    found = cheques.Box(*locate_signature(cv2.GaussianBlur(page, (3, 3), 0)).box)
    assert found.x1 >= truth.x1 + 295  # the tail's end
    assert found.y1 <= truth.y1 + 3  # not the line 2 px below the signature, nor its blurred edges
