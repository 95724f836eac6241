"""Imported by the fork server of `openrtc start --processes N`: load the models once.

The fork server is the process every worker process is forked from. Importing this
module there loads Silero and the end-of-turn model before the first fork, so the
children share one copy of them, copy-on-write (both are safe to use after a fork:
their native sessions run on the calling thread). `shared_models()` freezes the objects
loaded so far out of the garbage collector, which keeps a child's collections from
writing to (and so copying) the shared pages.
"""

from __future__ import annotations

from .models import shared_models

shared_models()
