"""``python -m deltalens.extract run -p PARAMS`` / ``merge DIR`` (see :func:`deltalens.extract.run.main`)."""

from .run import main

raise SystemExit(main())
