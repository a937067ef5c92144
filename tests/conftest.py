"""Settings shared by every test, pure or not."""

import os

# Keep every test on this machine: if anything ever asked Google's auth
# library for default credentials, the metadata-server probe would go to a
# closed loopback port instead of the link-local metadata address.
os.environ["GCE_METADATA_HOST"] = "127.0.0.1:9"
os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"
os.environ["NO_GCE_CHECK"] = "True"
os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
