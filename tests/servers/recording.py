"""The recording server now ships as :mod:`modelfactory.testing` (users can put it in their own tests);
this module keeps the old import path and ``python -m tests.servers.recording`` working."""

from __future__ import annotations

from modelfactory.testing import Recorded, RecordingServer, Scripted, main

__all__ = ["Recorded", "RecordingServer", "Scripted", "main"]

if __name__ == "__main__":
    main()
