from dm.rpc import FINAL, HTTP_STATUS, Code, Context, RpcError


def test_http_status_covers_every_code():
    assert set(HTTP_STATUS) == set(Code)


def test_http_status_matches_contract_for_codes_this_service_returns():
    expected = {
        Code.OK: 200,
        Code.INVALID_ARGUMENT: 400,
        Code.PERMISSION_DENIED: 403,
        Code.ALREADY_EXISTS: 409,
        Code.ABORTED: 409,
        Code.DEADLINE_EXCEEDED: 504,
        Code.UNAVAILABLE: 503,
        Code.UNIMPLEMENTED: 501,
        Code.INTERNAL: 500,
    }
    assert {code: HTTP_STATUS[code] for code in expected} == expected


def test_retryable_codes_are_not_final():
    for code in (Code.UNAVAILABLE, Code.ABORTED, Code.INTERNAL, Code.DEADLINE_EXCEEDED):
        assert code not in FINAL


def test_rpc_error_keeps_code_and_message():
    exc = RpcError(Code.ALREADY_EXISTS, "taken")
    assert (exc.code, exc.message, str(exc)) == (Code.ALREADY_EXISTS, "taken", "taken")


def test_context_remaining_without_deadline_is_none():
    assert Context().remaining() is None


def test_context_remaining_counts_down(monkeypatch):
    monkeypatch.setattr("dm.rpc.time.monotonic", lambda: 100.0)
    assert Context(deadline=102.5).remaining() == 2.5
