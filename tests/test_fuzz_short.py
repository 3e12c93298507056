"""A short run of ``scripts/fuzz.py`` (about 20 s): mutated images through ``read_image`` + ``preprocess``,
mutated and generated manifests through the audit's validation, policies through ``load_policy``. The
only allowed failures are SigvaultError; the 10-minute run is reported in docs/reliability.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz.py"


@pytest.fixture(scope="module")
def fuzz():  # noqa: ANN201 - the script as a module
    spec = importlib.util.spec_from_file_location("sigvault_fuzz_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_seeds_are_valid_signatures(fuzz) -> None:  # noqa: ANN001
    from sigvault import imaging
    from sigvault.errors import ImageError

    seeds = fuzz.image_seeds()
    assert {name.rsplit(".", 1)[1] for name in seeds} == {"png", "jpg", "tiff", "gif", "bmp"}
    for name, data in seeds.items():
        if name == "pages.tiff":  # two pages: refused unless a page is chosen, then each is a signature
            with pytest.raises(ImageError, match=r"^pages\.tiff: a TIFF of 2 pages; say which page"):
                imaging.load_canvas(data, name=name)
            for page in (1, 2):
                assert imaging.preprocess(imaging.read_image(data, name=name, page=page)).max() > 0
            continue
        canvas = imaging.load_canvas(data, name=name)
        assert canvas.shape == (128, 256) and canvas.max() > 0, name


def test_mutations_change_the_bytes(fuzz) -> None:  # noqa: ANN001
    data = bytes(range(100))
    assert fuzz.mutate(data, [("truncate", 0.5)]) == data[:50]
    assert fuzz.mutate(data, [("flip", 0.0, 0)])[0] == 1
    assert fuzz.mutate(data, [("u32", 0.1, 0xFFFFFFFF, True)])[10:14] == b"\xff" * 4
    assert fuzz.mutate(data, [("delete", 0.0, 10)]) == data[10:]
    assert fuzz.mutate(b"", [("flip", 0.3, 1), ("byte", 0.2, 7), ("dup", 0.0, 4)]) == b""


def test_short_fuzz_run_finds_no_crash(fuzz, tmp_path: Path) -> None:  # noqa: ANN001
    tally = fuzz.run(20, crash_dir=tmp_path / "crashes")
    crashes = {key: value["traceback"] for key, value in tally.crashes.items()}
    assert crashes == {}
    assert min(tally.inputs[t] for t in ("image", "manifest", "policy")) >= 50  # one round of each at least
    assert max(tally.slowest.values()) < fuzz.HANG_SECONDS
