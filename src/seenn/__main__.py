import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the package loads: a clean stop, as at any other moment
    print("seenn: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
