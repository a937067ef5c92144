from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Execution(_message.Message):
    __slots__ = ()
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SCHEDULING: _ClassVar[Execution.State]
        RUNNING: _ClassVar[Execution.State]
        STOPPING: _ClassVar[Execution.State]
        FINISHED: _ClassVar[Execution.State]
        ABNORMAL_FINISHED: _ClassVar[Execution.State]
    SCHEDULING: Execution.State
    RUNNING: Execution.State
    STOPPING: Execution.State
    FINISHED: Execution.State
    ABNORMAL_FINISHED: Execution.State
    class ID(_message.Message):
        __slots__ = ("quest", "attempt", "id")
        QUEST_FIELD_NUMBER: _ClassVar[int]
        ATTEMPT_FIELD_NUMBER: _ClassVar[int]
        ID_FIELD_NUMBER: _ClassVar[int]
        quest: str
        attempt: int
        id: int
        def __init__(self, quest: _Optional[str] = ..., attempt: _Optional[int] = ..., id: _Optional[int] = ...) -> None: ...
    class Auth(_message.Message):
        __slots__ = ("id", "token")
        ID_FIELD_NUMBER: _ClassVar[int]
        TOKEN_FIELD_NUMBER: _ClassVar[int]
        id: Execution.ID
        token: bytes
        def __init__(self, id: _Optional[_Union[Execution.ID, _Mapping]] = ..., token: _Optional[bytes] = ...) -> None: ...
    def __init__(self) -> None: ...
