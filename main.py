"""Cloud Function entry point: dm.Deps.ActivateExecution over pRPC.

Deploy with entry point `activate_execution`. All logic lives in `dm/`.
"""

import flask
import functions_framework

from dm import edge

# Answers for paths and failures that never reach the function, such as
# /favicon.ico, also speak pRPC.
edge.install_error_handlers(functions_framework.errorhandler)


@functions_framework.http
def activate_execution(request: flask.Request) -> flask.Response:
    """HTTP Cloud Function serving POST /prpc/dm.Deps/ActivateExecution and /."""
    return edge.handle(request)
