"""The command line of the synthetic city: ``python -m vpr.data.synthetic --out DIR --preset tiny|default|large``."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from vpr.data.synthetic.config import PRESETS
from vpr.data.synthetic.preview import make_preview
from vpr.data.synthetic.writer import generate_city
from vpr.errors import ConfigError, DataError


def _seed(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def _workers(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


class _SigtermStops:
    """SIGTERM (a scheduler's time limit, ``kill``) stops the generation as Ctrl-C does, through its clean-up (the
    worker processes stopped), instead of ending the process at once with no word; ``received`` tells them apart.
    A handler someone else set (a job manager's) is left in place."""

    def __init__(self) -> None:
        self.received = False
        self._installed = False

    def _stop(self, signum: int, frame: object) -> None:
        if not self.received:
            self.received = True
            raise KeyboardInterrupt

    def __enter__(self) -> _SigtermStops:
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            try:
                signal.signal(signal.SIGTERM, self._stop)
                self._installed = True
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vpr.data.synthetic",
        description="Generate the synthetic city in Pittsburgh's layout (idempotent: an existing complete "
        "city with the same preset and seed is kept).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output dataset root")
    parser.add_argument("--preset", default="default", choices=PRESETS)
    parser.add_argument("--seed", type=_seed, default=0, help="a whole number >= 0 (default 0)")
    parser.add_argument("--workers", type=_workers, default=None, help="processes, >= 1 (default: up to 2)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the city is complete")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--preview", type=Path, default=None, help="also write a contact-sheet PNG here")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.preview is not None:
        from PIL import Image

        Image.init()
        if args.preview.suffix.lower() not in Image.registered_extensions():
            parser.error(f"--preview {args.preview}: name an image file (.png, .jpg)")
    start = time.perf_counter()
    terminated = _SigtermStops()
    try:
        with terminated:
            root = generate_city(
                args.out, args.preset, seed=args.seed, progress=not args.quiet, workers=args.workers, force=args.force
            )
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder that cannot be made or written, a disk that fills up
        where = f" ({e.filename})" if e.filename else ""
        print(
            f"error: --out {args.out}: the synthetic city cannot be written there: {e.strerror or e}{where}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        stop = "stopped by SIGTERM" if terminated.received else "interrupted (Ctrl-C)"
        print(
            f"error: {stop}: {args.out} stays marked incomplete and is generated again by the next run of this "
            "command (or of a script that uses it)",
            file=sys.stderr,
        )
        return 143 if terminated.received else 130
    print(
        f"synthetic city ({args.preset}, seed {args.seed}) ready at {root} in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    if args.preview is not None:
        try:
            print(f"preview: {make_preview(root, args.preview)}", file=sys.stderr)
        except OSError as e:
            print(
                f"error: --preview {args.preview}: cannot write it ({e.strerror or e}); the city is ready",
                file=sys.stderr,
            )
            return 2
    return 0
