"""Fuzz the image loader and the audit manifest reader with hypothesis; the only allowed failures are
:class:`~sigvault.errors.SigvaultError` (one-line errors the CLI turns into exit code 1 or 2).

    nice -n 15 python scripts/fuzz.py --minutes 10            # the run reported in docs/reliability.md
    python scripts/fuzz.py --seconds 20 --json                # a short run (tests/test_fuzz_short.py)

Targets:

- ``image``: bytes of small valid PNG, JPEG, TIFF, GIF and BMP signatures drawn with Pillow, mutated
  (bit flips, byte overwrites, 32-bit header fields set to extreme values, insertions, deletions, chunk
  duplication, truncation), then ``imaging.read_image`` + ``imaging.preprocess``;
- ``manifest``: valid CSV and JSON Lines manifests, mutated the same way, and manifests built by hypothesis
  from arbitrary text, through ``audit.validate_manifest`` + ``audit.iter_rows``; audit policies (TOML)
  through ``audit.load_policy``.

Every input runs under a 30 s alarm: one that takes longer counts as a hang. A crash (any other exception
or a hang) is recorded once per (target, exception type, innermost sigvault frame) with the smallest input
hypothesis found, saved under ``--crash-dir``; the run then goes on so the count of inputs is complete.
Exit status 0 when nothing crashed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from sigvault import audit, imaging  # noqa: E402
from sigvault.errors import SigvaultError  # noqa: E402

HANG_SECONDS = 30
IMAGE_FORMATS = ("PNG", "JPEG", "TIFF", "GIF", "BMP")


class Hang(Exception):
    """An input took longer than :data:`HANG_SECONDS`."""


# ----------------------------------------------------------------------------------------------- seeds


def _signature(size: tuple[int, int] = (160, 64), seed: int = 3) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    im = Image.new("L", size, 245)
    draw = ImageDraw.Draw(im)
    xs = np.linspace(0.1 * w, 0.9 * w, 7)
    ys = rng.uniform(0.25 * h, 0.75 * h, 7)
    draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=20, width=3)
    draw.ellipse((w * 0.3, h * 0.2, w * 0.4, h * 0.8), outline=30, width=2)
    return im


def image_seeds() -> dict[str, bytes]:
    """Valid encodings of a small signature, one per format and a few modes."""
    im = _signature()
    out: dict[str, bytes] = {}

    def save(name: str, image: Image.Image, fmt: str, **kw: object) -> None:
        buf = io.BytesIO()
        image.save(buf, format=fmt, **kw)
        out[name] = buf.getvalue()

    save("grey.png", im, "PNG")
    save("rgba.png", im.convert("RGBA"), "PNG")
    save("grey16.png", Image.fromarray(np.asarray(im).astype(np.uint16) * 257), "PNG")
    save("rgb.jpg", im.convert("RGB"), "JPEG", quality=85)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif.jpg", im.convert("RGB"), "JPEG", quality=85, exif=exif.tobytes())
    save("grey.tiff", im, "TIFF")
    save("cmyk.tiff", im.convert("CMYK"), "TIFF", compression="tiff_deflate")
    save("pages.tiff", im, "TIFF", save_all=True, append_images=[_signature(seed=4)])  # refused unless a page is given
    save("anim.gif", im.convert("P"), "GIF", save_all=True, append_images=[_signature(seed=5).convert("P")])
    save("rgb.bmp", im.convert("RGB"), "BMP")
    return out


MANIFEST_CSV = (
    "item_id,person,image,amount,branch\n"
    "c-1,alice,scans/c1.png,1250.00,north\n"
    'c-2,"Müller, Hans",scans/c2.png,,south\n'
    "c-3,bob,scans/c3.jpg,99.5,\n"
)
MANIFEST_JSONL = (
    '{"item_id": "c-1", "person": "alice", "image": "scans/c1.png", "amount": 1250}\n'
    '{"item_id": 2, "person": "bob", "image": "c2.png", "amount": "10.5", "note": {"a": [1, 2]}}\n'
    '{"item_id": "c-3", "person": null, "image": "c3.png"}\n'
)
POLICY_TOML = (
    'name = "cheques"\nmissing_amount = "large"\n'
    '[[band]]\nname = "small"\nmax_amount = 1000\n'
    '[[band]]\nname = "large"\nthreshold_margin = 0.04\nmin_accept_probability = 0.99\n'
)


# ------------------------------------------------------------------------------------------- mutation

_EXTREMES = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 40000, 65500)

mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 7)),
    st.tuples(st.just("byte"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("u32"), st.floats(0, 1), st.sampled_from(_EXTREMES), st.booleans()),
    st.tuples(st.just("u16"), st.floats(0, 1), st.sampled_from(_EXTREMES), st.booleans()),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 64)),
    st.tuples(st.just("dup"), st.floats(0, 1), st.integers(1, 256)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
)


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    """Apply mutation ops (positions are fractions of the current length)."""
    buf = bytearray(data)
    for op in ops:
        kind, frac = op[0], op[1]
        pos = min(int(frac * len(buf)), max(len(buf) - 1, 0))
        if kind == "flip" and buf:
            buf[pos] ^= 1 << op[2]
        elif kind == "byte" and buf:
            buf[pos] = op[2]
        elif kind in ("u32", "u16"):
            size = 4 if kind == "u32" else 2
            value = op[2] & (0xFFFFFFFF if size == 4 else 0xFFFF)
            buf[pos : pos + size] = value.to_bytes(size, "big" if op[3] else "little")
        elif kind == "insert":
            buf[pos:pos] = op[2]
        elif kind == "delete":
            del buf[pos : pos + op[2]]
        elif kind == "dup":
            buf[pos:pos] = buf[pos : pos + op[2]]
        elif kind == "truncate":
            del buf[pos:]
    return bytes(buf)


# ------------------------------------------------------------------------------------------- the runs


@dataclass
class Tally:
    inputs: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # "<target>:<ok | error class>"
    crashes: dict[str, dict[str, str]] = field(default_factory=dict)
    slowest: dict[str, float] = field(default_factory=dict)


def _signature_of(target: str, exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/sigvault/" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{target}: {type(exc).__name__} at {where}"


def _alarm(_signum: int, _frame: object) -> None:
    raise Hang(f"no answer within {HANG_SECONDS} s")


class Fuzzer:
    def __init__(self, tally: Tally, crash_dir: Path | None, workdir: Path) -> None:
        self.tally = tally
        self.crash_dir = crash_dir
        self.workdir = workdir
        self.seeds = image_seeds()

    def _run(self, target: str, fn: Callable[[], object], payload: bytes) -> None:
        """One input: SigvaultError is the allowed outcome; anything else is a crash (raised for shrinking
        unless this crash is already known)."""
        self.tally.inputs[target] += 1
        t0 = time.perf_counter()
        signal.alarm(HANG_SECONDS)
        try:
            fn()
            self.tally.outcomes[f"{target}:ok"] += 1
        except SigvaultError as exc:
            self.tally.outcomes[f"{target}:{type(exc).__name__}"] += 1
            if "\n" in str(exc):  # quoted from the input; the CLI folds whitespace into one line
                self.tally.outcomes[f"{target}:message-with-newline"] += 1
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            key = _signature_of(target, exc)
            if key in self.tally.crashes:
                self.tally.outcomes[f"{target}:known-crash"] += 1
                return
            self._last = (key, exc, payload)
            raise
        finally:
            signal.alarm(0)
            elapsed = time.perf_counter() - t0
            self.tally.slowest[target] = max(self.tally.slowest.get(target, 0.0), elapsed)

    def record(self) -> None:
        """Keep the last (shrunk) failing input of the crash hypothesis just reported."""
        key, exc, payload = self._last
        entry = {
            "exception": f"{type(exc).__name__}: {exc}"[:500],
            "traceback": "".join(traceback.format_exception(exc)),
        }
        if self.crash_dir is not None:
            self.crash_dir.mkdir(parents=True, exist_ok=True)
            path = self.crash_dir / f"crash-{len(self.tally.crashes) + 1}.bin"
            path.write_bytes(payload)
            entry["input"] = str(path)
        self.tally.crashes[key] = entry

    # --------------------------------------------------------------------------------------- targets

    def image_test(self) -> Callable[[], None]:
        names = sorted(self.seeds)

        @given(st.sampled_from(names), st.lists(mutation, min_size=1, max_size=6))
        def fuzz_image(seed: str, ops: list[tuple]) -> None:
            data = mutate(self.seeds[seed], ops)

            def go() -> None:
                grey = imaging.read_image(data, name=f"fuzz-{seed}")
                imaging.preprocess(grey, name=f"fuzz-{seed}")

            self._run("image", go, data)

        return fuzz_image

    def manifest_test(self) -> Callable[[], None]:
        cell = st.one_of(
            st.text(max_size=20),
            st.sampled_from(["", " ", "1e309", "nan", "-0", "1,5", '"', "\r", "\x00", "\ufeff", "item_id"]),
        )
        built_csv = st.lists(st.lists(cell, min_size=0, max_size=6), min_size=0, max_size=6).map(
            lambda rows: "\n".join(",".join(r) for r in rows).encode("utf-8", "surrogatepass")
        )
        json_value = st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
            max_leaves=8,
        )
        json_row = st.dictionaries(
            st.sampled_from(["item_id", "person", "image", "amount", "decision", "x"]) | st.text(max_size=6),
            json_value,
            max_size=6,
        )
        built_jsonl = st.lists(json_row, max_size=5).map(
            lambda rows: "\n".join(json.dumps(r) for r in rows).encode("utf-8", "surrogatepass")
        )
        mutated = st.tuples(
            st.sampled_from([MANIFEST_CSV, MANIFEST_JSONL]).map(str.encode), st.lists(mutation, min_size=1, max_size=5)
        ).map(lambda t: mutate(*t))
        content = st.one_of(mutated, built_csv, built_jsonl, st.binary(max_size=200))
        suffix = st.sampled_from([".csv", ".jsonl", ".txt"])
        path = self.workdir / "manifest"

        @given(content, suffix)
        def fuzz_manifest(data: bytes, ext: str) -> None:
            target = path.with_suffix(ext)
            target.write_bytes(data)

            def go() -> None:
                info = audit.validate_manifest(target)
                rows = list(audit.iter_rows(info))
                assert len(rows) == info.rows, (len(rows), info.rows)

            self._run("manifest", go, data)

        return fuzz_manifest

    def policy_test(self) -> Callable[[], None]:
        path = self.workdir / "policy.toml"
        content = st.one_of(
            st.tuples(st.just(POLICY_TOML.encode()), st.lists(mutation, min_size=1, max_size=5)).map(
                lambda t: mutate(*t)
            ),
            st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
        )

        @given(content)
        def fuzz_policy(data: bytes) -> None:
            path.write_bytes(data)
            self._run("policy", lambda: audit.load_policy(path), data)

        return fuzz_policy


def run(seconds: float, *, crash_dir: Path | None = None, seed: int | None = None, rounds: int = 50) -> Tally:
    """Fuzz for about ``seconds`` (image 70 % of the time, manifest 25 %, policy 5 %)."""
    tally = Tally()
    warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF and the like: expected here
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        with tempfile.TemporaryDirectory(prefix="sigvault-fuzz-") as tmp:
            fuzzer = Fuzzer(tally, crash_dir, Path(tmp))
            targets = [
                ("image", fuzzer.image_test, 0.70),
                ("manifest", fuzzer.manifest_test, 0.25),
                ("policy", fuzzer.policy_test, 0.05),
            ]
            deadline = time.monotonic() + seconds
            round_no = 0
            while time.monotonic() < deadline:
                for _name, test, share in targets:
                    budget = max(0.5, share * min(60.0, seconds / 4))
                    end = min(deadline, time.monotonic() + budget)
                    _run_for(test, end, seed=None if seed is None else seed + round_no, rounds=rounds, fuzzer=fuzzer)
                    round_no += 1
                    if time.monotonic() >= deadline:
                        break
    finally:
        signal.signal(signal.SIGALRM, old)
    return tally


class _TimeUp(Exception):
    pass


def _run_for(
    make_test: Callable[[], Callable[[], None]], end: float, *, seed: int | None, rounds: int, fuzzer: Fuzzer
) -> None:
    """Run a hypothesis test in rounds of ``rounds`` examples until ``end``; record new crashes."""
    while time.monotonic() < end:
        configured = settings(
            max_examples=rounds,
            deadline=None,
            database=None,
            derandomize=False,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
            report_multiple_bugs=False,
        )(make_test())
        if seed is not None:
            from hypothesis import seed as hseed

            configured = hseed(seed)(configured)
            seed += 1
        try:
            configured()
        except Exception:
            if getattr(fuzzer, "_last", None) is not None:
                fuzzer.record()
                fuzzer._last = None
            else:
                raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None, help="derandomise (for a reproducible run)")
    parser.add_argument("--crash-dir", type=Path, default=Path("fuzz-crashes"))
    parser.add_argument("--json", action="store_true", help="print the tally as JSON")
    parser.add_argument("--keep-stderr", action="store_true", help="let libtiff/libjpeg warnings through")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else 60 * (args.minutes if args.minutes is not None else 10)
    started = time.monotonic()
    saved_stderr = os.dup(2)
    if not args.keep_stderr:  # libtiff and libjpeg print a line per damaged file on fd 2
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    try:
        tally = run(seconds, crash_dir=args.crash_dir, seed=args.seed)
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
    elapsed = time.monotonic() - started
    result = {
        "seconds": round(elapsed, 1),
        "inputs": dict(tally.inputs),
        "total_inputs": sum(tally.inputs.values()),
        "outcomes": dict(sorted(tally.outcomes.items())),
        "slowest_input_s": {k: round(v, 3) for k, v in tally.slowest.items()},
        "crashes": {k: {kk: vv for kk, vv in v.items() if kk != "traceback"} for k, v in tally.crashes.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"fuzzed for {elapsed:.0f} s: {result['total_inputs']} inputs {dict(tally.inputs)}")
        for key, value in result["outcomes"].items():
            print(f"  {key:45s} {value}")
        print(f"slowest input per target (s): {result['slowest_input_s']}")
        print(f"crashes: {len(tally.crashes)}")
        for key, value in tally.crashes.items():
            print(f"--- {key}\n{value['traceback']}")
    return 1 if tally.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
