"""Run the command line as ``python -m peftlab`` (also what torchrun and accelerate launch start)."""

from peftlab.cli import main

raise SystemExit(main())
