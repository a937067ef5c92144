"""Benchmark and load harnesses (never deployed; see README)."""

import os

# Nothing in bench/ may ever reach a Google service or the metadata server:
# if a library asked for default credentials, the probe would hit a closed
# loopback port. The package runs this before any of its modules imports a
# Google library.
os.environ["GCE_METADATA_HOST"] = "127.0.0.1:9"
os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"
os.environ["NO_GCE_CHECK"] = "True"
os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
