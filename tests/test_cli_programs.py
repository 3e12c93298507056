"""The CLI for programs: ``--version``, ``--json`` errors as one object on stdout, Ctrl-C during an audit
(exit 130 and the ``--resume`` command), a resumed audit's counts, multi-page TIFFs refused unless a page
is chosen (``read_image(page=N)``)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ImageFactory, signature_png
from PIL import Image
from test_cli import Invoke, cli  # noqa: F401 - cli is a fixture
from typer.testing import CliRunner

from sigvault import __version__, imaging
from sigvault.cli import app
from sigvault.errors import ImageError


def test_version() -> None:
    out = CliRunner().invoke(app, ["--version"])
    assert (out.exit_code, out.stdout) == (0, f"sigvault {__version__}\n")


@pytest.mark.parametrize(
    ("args", "kind", "message", "code"),
    [
        (["people", "show", "nobody"], "unknown_person", "person 'nobody' is not enrolled; see `sigvault people list`", 1),
        (["verify", "nobody", "{tmp}/absent.png"], "unreadable_image", "{tmp}/absent.png: no such file; check the path", 1),
        (["people", "show", "a/b"], "invalid_person", None, 2),
    ],
)
def test_json_errors_are_one_object_on_stdout(
    cli: Invoke,  # noqa: F811
    tmp_path: Path,
    args: list[str],
    kind: str,
    message: str | None,
    code: int,
) -> None:
    args = [a.format(tmp=tmp_path) for a in args]
    text = cli(*args)
    out = cli(*args, "--json")
    assert out.exit_code == text.exit_code == code
    assert out.stderr == "" and text.stdout == ""
    obj = json.loads(out.stdout)
    assert out.stdout.count("\n") == 1 and list(obj) == ["error", "kind", "message", "exit_code"]
    assert (obj["error"], obj["kind"], obj["exit_code"]) == (True, kind, code)
    assert text.stderr == f"error: {obj['message']}\n"
    if message is not None:
        assert obj["message"] == message.format(tmp=tmp_path)


def test_interrupted_audit_exits_130_with_the_resume_command_then_resumes_with_this_runs_counts(
    cli: Invoke,  # noqa: F811
    images: ImageFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sigvault.vault import Vault

    assert cli("enroll", "alice", *images.refs(1, 3)).exit_code == 0
    manifest = tmp_path / "items.csv"
    rows = [(f"c{i}", images.write(f"c{i}.png", 1 if i % 2 else 2, 6 + i)) for i in range(5)]
    manifest.write_text("item_id,person,image\n" + "".join(f"{i},alice,{img}\n" for i, img in rows))
    out_dir = tmp_path / "audit"
    real = Vault.verify_many
    calls = []

    def ctrl_c_on_second_chunk(self, items, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append(len(items))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, items, **kw)

    monkeypatch.setattr(Vault, "verify_many", ctrl_c_on_second_chunk)
    hit = cli("audit", manifest, "--out", out_dir, "--batch-size", "2")
    assert hit.exit_code == 130 and hit.stdout == ""
    assert hit.stderr == f"error: interrupted; finish the audit with: sigvault audit {manifest} --out {out_dir} --resume\n"
    calls.clear()
    hit_json = cli("audit", manifest, "--out", tmp_path / "other", "--batch-size", "2", "--json")
    assert hit_json.exit_code == 130 and json.loads(hit_json.stdout)["kind"] == "interrupted"

    monkeypatch.setattr(Vault, "verify_many", real)
    done = cli("audit", manifest, "--out", out_dir, "--resume")
    assert done.exit_code == 0, done.stderr
    lines = done.stdout.splitlines()
    summary = json.loads((out_dir / "summary.json").read_text())
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    assert lines[0].startswith("audited 3 items in ")
    assert lines[0].endswith(f" s (2 done before the resume); all 5 items: {counts}")
    assert (summary["resumed_rows"], summary["decided_this_run"], summary["rows"]) == (2, 3, 5)


def _tiff(pages: list[bytes]) -> bytes:
    frames = [Image.open(io.BytesIO(p)).convert("L") for p in pages]
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def test_multi_page_tiff_needs_a_page(tmp_path: Path) -> None:
    first, second = signature_png(1, 0, size=(300, 100)), signature_png(2, 0, size=(300, 100))
    path = tmp_path / "scan.tif"
    path.write_bytes(_tiff([first, second]))
    with pytest.raises(ImageError) as err:
        imaging.read_image(path)
    assert str(err.value) == f"{path}: a TIFF of 2 pages; say which page holds the signature (--page 1 to 2, or a page column in an audit manifest)"
    assert np.array_equal(imaging.read_image(path, page=1), imaging.read_image(first))
    assert np.array_equal(imaging.read_image(path, page=2), imaging.read_image(second))
    with pytest.raises(ImageError, match=r"scan.tif: no page 3; the image has 2 pages, choose one from 1 to 2$"):
        imaging.read_image(path, page=3)
    # a one-page image reads as before, and has a page 1 only
    assert np.array_equal(imaging.read_image(first, page=1), imaging.read_image(first))
    with pytest.raises(ImageError, match=r"no page 2; the image has 1 page only, choose page 1$"):
        imaging.read_image(first, page=2, name="one.png")


def test_multi_page_tiff_is_refused_by_verify(cli: Invoke, images: ImageFactory, tmp_path: Path) -> None:  # noqa: F811
    cli("enroll", "alice", *images.refs(1, 3))
    path = tmp_path / "scan.tif"
    path.write_bytes(_tiff([signature_png(1, 5), signature_png(1, 6)]))
    out = cli("verify", "alice", path, "--json")
    assert out.exit_code == 1
    assert json.loads(out.stdout) == {
        "error": True,
        "kind": "unreadable_image",
        "message": f"{path}: a TIFF of 2 pages; say which page holds the signature (--page 1 to 2, or a page column in an audit manifest)",
        "exit_code": 1,
    }
