"""``python -m vpr.data.synthetic --out DIR --preset tiny|default|large``: see :func:`vpr.data.synthetic.cli.main`."""

from vpr.data.synthetic.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
