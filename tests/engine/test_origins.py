from engine.origins import origin_allowed, parse_allowed


def test_no_origin_is_a_non_browser_client_and_always_allowed() -> None:
    assert origin_allowed(None, "gw:8081", parse_allowed("https://a.example"), dev=False)


def test_a_list_allows_exactly_its_origins() -> None:
    allowed = parse_allowed(" https://Live.Example.com/ , http://localhost:3000")
    assert origin_allowed("https://live.example.com", "gw", allowed, dev=False)
    assert origin_allowed("http://localhost:3000", "gw", allowed, dev=True)
    assert not origin_allowed("https://evil.example", "gw", allowed, dev=True)
    assert not origin_allowed("http://live.example.com", "gw", allowed, dev=False)


def test_empty_list_allows_all_in_dev_and_only_the_same_host_outside() -> None:
    none = parse_allowed("")
    assert origin_allowed("https://evil.example", "127.0.0.1:8081", none, dev=True)
    assert origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8081", none, dev=False)
    assert not origin_allowed("https://evil.example", "127.0.0.1:8081", none, dev=False)
    assert not origin_allowed("null", "127.0.0.1:8081", none, dev=False)
    assert not origin_allowed("http://127.0.0.1:8080", None, none, dev=False)
