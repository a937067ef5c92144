from dm.proto import graph_data_pb2 as _graph_data_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActivateExecutionReq(_message.Message):
    __slots__ = ("auth", "execution_token")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    auth: _graph_data_pb2.Execution.Auth
    execution_token: bytes
    def __init__(self, auth: _Optional[_Union[_graph_data_pb2.Execution.Auth, _Mapping]] = ..., execution_token: _Optional[bytes] = ...) -> None: ...
