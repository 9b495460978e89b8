import re
from importlib import resources

from engine.events import HISTORY, EventType


def test_lua_scripts_write_only_history_types_the_enum_names() -> None:
    lua = resources.files("engine").joinpath("lua")
    written = set()
    for script in lua.iterdir():
        if script.name.endswith(".lua"):
            written |= set(re.findall(r"type = '([a-z.]+)'", script.read_text()))
    assert written and written <= {t.value for t in HISTORY}


def test_values_are_the_contracts_names() -> None:
    assert EventType.SALE_SOLDOUT == "sale.soldout" and EventType("lottery.drawn")


def test_lua_status_names_are_the_enums() -> None:
    from engine.lottery import LotteryStatus
    from engine.sales import SaleStatus

    lua = resources.files("engine").joinpath("lua")
    for script in lua.iterdir():
        if not script.name.endswith(".lua"):
            continue
        text = script.read_text()
        named = set(re.findall(r"'status', '([a-z]+)',", text))
        named |= set(re.findall(r"(?:status'?\)?|s\[\d\]) [=~]= '([a-z]+)'", text))
        allowed = {s.value for s in SaleStatus} | {s.value for s in LotteryStatus}
        assert named <= allowed, (script.name, named - allowed)
