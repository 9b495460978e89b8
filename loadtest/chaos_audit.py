"""The audit of a chaos run (``loadtest.chaos``): pure functions, no I/O, no clock.

The chaos driver hands in what each client saw and what Redis and the API hold after the run;
these functions say what went wrong. They must never soften a finding: every count here is
either a contract violation (and fails the run) or is reported as information with the reason
it is not one.

Rules checked (PROTOCOL.md §4):
- a viewer receives every history id after its first welcome's ``last_id`` exactly once, in
  id order, across resumes; a resume answered ``recovered: false`` legitimately skips the ids
  between what the viewer had and that welcome's ``last_id`` (counted apart, never as a gap);
- an acknowledged danmaku is in the stream, once per ``ref``; an acknowledged order is among
  the sale's orders; a sale never sells more than its stock, nor a user more than the limit;
- the same ``ref`` always gets the same answer.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.ids import stream_id_key

StreamKey = tuple[int, int]


# -- viewers: gaps and duplicates ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    last_id: str
    recovered: bool


@dataclass(slots=True)
class ViewerLog:
    """What one viewer's client saw, in the order its reader took it."""

    user: str
    welcomes: list[Welcome]
    received: list[tuple[int, str]]
    """``(connection, id)`` of each history event; ``connection`` is the 1-based index of the
    welcome that started the connection the event came on."""
    died: str | None = None
    """Why the client stopped before the end of the run, if it did."""


@dataclass(frozen=True, slots=True)
class ViewerAudit:
    user: str
    received: int
    expected: int
    gaps: int
    duplicates: int
    out_of_order: int
    unknown: int
    """Ids received that are not in the stream, or not after the first welcome's last_id."""
    resumes: int
    unrecovered: int
    """Resumes answered `recovered: false` (the snapshot restarts the viewer)."""
    skipped_unrecovered: int
    """Ids legitimately skipped by those resumes."""
    first_gaps: tuple[str, ...] = ()
    died: str | None = None


class StreamIndex:
    """A room's full history, sorted, for many viewer audits."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.ids = list(ids)
        self.keys = [stream_id_key(i) for i in self.ids]
        if any(a >= b for a, b in zip(self.keys, self.keys[1:], strict=False)):
            raise ValueError("stream ids are not strictly increasing")
        self.members = set(self.keys)

    def between(self, lo: StreamKey, hi: StreamKey) -> range:
        """Positions of the ids in ``(lo, hi]``."""
        return range(bisect.bisect_right(self.keys, lo), bisect.bisect_right(self.keys, hi))


def audit_viewer(log: ViewerLog, stream: StreamIndex, end_id: str) -> ViewerAudit:
    """Gaps and duplicates of one viewer against the stream, up to ``end_id``."""
    if not log.welcomes:
        return ViewerAudit(log.user, 0, 0, 0, 0, 0, 0, 0, 0, died=log.died or "never connected")
    start = stream_id_key(log.welcomes[0].last_id)
    end = stream_id_key(end_id)
    got = [(conn, stream_id_key(i)) for conn, i in log.received]
    keys = [k for _, k in got]
    seen = Counter(keys)
    duplicates = sum(n - 1 for n in seen.values())
    out_of_order = sum(1 for a, b in zip(keys, keys[1:], strict=False) if b < a)
    unknown = sum(1 for k in seen if k <= start or k not in stream.members)

    excused: set[StreamKey] = set()
    for index, w in enumerate(log.welcomes[1:], start=2):
        if w.recovered:
            continue
        # The viewer had everything up to the newest id of its earlier connections; this
        # welcome's snapshot stands for everything up to its last_id.
        had = max((k for conn, k in got if conn < index), default=start)
        for pos in stream.between(max(had, start), stream_id_key(w.last_id)):
            excused.add(stream.keys[pos])

    expected = stream.between(start, end)
    missing = [
        stream.ids[pos]
        for pos in expected
        if stream.keys[pos] not in seen and stream.keys[pos] not in excused
    ]
    return ViewerAudit(
        user=log.user,
        received=len(keys),
        expected=len(expected),
        gaps=len(missing),
        duplicates=duplicates,
        out_of_order=out_of_order,
        unknown=unknown,
        resumes=len(log.welcomes) - 1,
        unrecovered=sum(1 for w in log.welcomes[1:] if not w.recovered),
        skipped_unrecovered=len(excused),
        first_gaps=tuple(missing[:5]),
        died=log.died,
    )


# -- danmaku -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DanmakuAudit:
    sent: int
    """Distinct refs sent (each may have been resent)."""
    acked: int
    resends: int
    refused: dict[str, int]
    lost_acked: int
    """Acked ids missing from the stream."""
    ack_mismatch: int
    """Acked ids whose stream event is not the danmaku of that ref."""
    double_published: int
    """Refs whose text is in the stream more than once (PROTOCOL.md §4: at most once)."""
    first_lost: tuple[str, ...] = ()


def audit_danmaku(
    acked: Mapping[str, str],
    texts_by_id: Mapping[str, str],
    *,
    text_of: Mapping[str, str],
    sent: int,
    resends: int,
    refused: Mapping[str, int],
) -> DanmakuAudit:
    """``acked``: ref -> acked id; ``texts_by_id``: the stream's danmaku texts; ``text_of``:
    ref -> the text sent with it (unique per ref)."""
    lost = [ref for ref, i in acked.items() if i not in texts_by_id]
    mismatch = sum(
        1 for ref, i in acked.items() if i in texts_by_id and texts_by_id[i] != text_of[ref]
    )
    counts = Counter(texts_by_id.values())
    ours = set(text_of.values())
    double = sum(1 for text, n in counts.items() if n > 1 and text in ours)
    return DanmakuAudit(
        sent=sent,
        acked=len(acked),
        resends=resends,
        refused=dict(refused),
        lost_acked=len(lost),
        ack_mismatch=mismatch,
        double_published=double,
        first_lost=tuple(lost[:5]),
    )


# -- flash sales ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SaleAudit:
    sale: str
    stock: int
    per_user_limit: int
    attempts: int
    answers: dict[str, int]
    orders: int
    sold_qty: int
    reported_sold: int
    oversold: int
    over_user_limit: int
    acked: int
    lost_acked: int
    """Orders acked to a buyer that are not in GET .../orders."""
    answer_changed: int
    """A ref resent after its ack got a different answer."""
    unknown_to_buyers: int
    """Orders no buyer saw acked (a buyer that gave up at the deadline; information only)."""


def audit_sale(
    sale: Mapping[str, Any],
    orders: Sequence[Mapping[str, Any]],
    acked: Mapping[str, tuple[str, str]],
    *,
    attempts: int,
    answers: Mapping[str, int],
    answer_changed: int,
) -> SaleAudit:
    """``sale``: GET .../sales/{id}; ``orders``: GET .../orders; ``acked``: order id ->
    (user, ref) as the buyers saw them."""
    stock = int(sale["stock"])
    limit = int(sale["per_user_limit"])
    sold_qty = sum(int(o["qty"]) for o in orders)
    per_user = Counter[str]()
    for o in orders:
        per_user[o["user"]] += int(o["qty"])
    ids = {o["id"] for o in orders}
    return SaleAudit(
        sale=str(sale["id"]),
        stock=stock,
        per_user_limit=limit,
        attempts=attempts,
        answers=dict(answers),
        orders=len(orders),
        sold_qty=sold_qty,
        reported_sold=int(sale["sold"]),
        oversold=max(0, sold_qty - stock, int(sale["sold"]) - stock),
        over_user_limit=sum(1 for n in per_user.values() if n > limit),
        acked=len(acked),
        lost_acked=sum(1 for i in acked if i not in ids),
        answer_changed=answer_changed,
        unknown_to_buyers=sum(1 for i in ids if i not in acked),
    )


# -- lotteries -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LotteryAudit:
    lottery: str
    acked: int
    entrants: int
    lost_acked: int
    """Entries acked to a viewer that are not among the drawn entrants."""
    verified: bool
    """`engine.lottery.verify` holds for the published record."""


# -- refunds -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    user: str
    outcome: str
    """``closed_4403``, ``refused_403`` (its reconnect was refused), ``closed_<code>``,
    or ``not_closed``."""
    latency_s: float | None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary_ms(values: Sequence[float]) -> dict[str, float | None]:
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    return {
        "n": len(values),
        "p50": ms(percentile(values, 50)),
        "p99": ms(percentile(values, 99)),
        "max": ms(max(values) if values else None),
    }


# -- the verdict ---------------------------------------------------------------------------


@dataclass(slots=True)
class Verdict:
    failures: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.failures.values())


def verdict(
    viewers: Sequence[ViewerAudit],
    danmaku: DanmakuAudit,
    sales: Sequence[SaleAudit],
    lotteries: Sequence[LotteryAudit],
    refunds: Sequence[RefundOutcome],
) -> Verdict:
    """What fails the run (contract violations) and what is only reported."""
    v = Verdict()
    v.failures = {
        "gaps": sum(a.gaps for a in viewers),
        "duplicates": sum(a.duplicates for a in viewers),
        "out_of_order": sum(a.out_of_order for a in viewers),
        "unknown_ids": sum(a.unknown for a in viewers),
        "lost_acked_danmaku": danmaku.lost_acked + danmaku.ack_mismatch,
        "double_published_danmaku": danmaku.double_published,
        "lost_acked_orders": sum(s.lost_acked for s in sales),
        "oversold": sum(s.oversold for s in sales),
        "over_user_limit": sum(s.over_user_limit for s in sales),
        "buy_answer_changed": sum(s.answer_changed for s in sales),
        "lost_acked_lottery_entries": sum(x.lost_acked for x in lotteries),
        "lotteries_not_verified": sum(1 for x in lotteries if not x.verified),
        "refunds_not_closed": sum(
            1 for r in refunds if r.outcome not in ("closed_4403", "refused_403")
        ),
    }
    v.notes = {
        "viewers_died": sum(1 for a in viewers if a.died),
        "resumes": sum(a.resumes for a in viewers),
        "unrecovered_resumes": sum(a.unrecovered for a in viewers),
        "skipped_by_unrecovered": sum(a.skipped_unrecovered for a in viewers),
        "orders_unknown_to_buyers": sum(s.unknown_to_buyers for s in sales),
        "refunds_refused_403_on_reconnect": sum(1 for r in refunds if r.outcome == "refused_403"),
    }
    return v


def as_dict(obj: Any) -> Any:
    return asdict(obj)


# -- the human table -----------------------------------------------------------------------


def table(report: Mapping[str, Any]) -> str:
    """A few lines a person reads after the run; the JSON has everything."""
    cfg = report["config"]
    fails = report["failures"]
    notes = report["notes"]
    lines = [
        f"chaos run: {cfg['seconds']} s, {cfg['viewers']} viewers, 3 gateways + api, "
        f"{report['faults_done']['gateway_kill']} gateway SIGKILLs, "
        f"{report['faults_done']['redis_restart']} redis SIGKILLs",
        "",
        f"{'check':<34}{'value':>12}  result",
        "-" * 56,
    ]

    def row(name: str, value: object, ok: bool | None = None) -> None:
        mark = "" if ok is None else ("ok" if ok else "FAIL")
        lines.append(f"{name:<34}{value!s:>12}  {mark}")

    for key, value in fails.items():
        row(key.replace("_", " "), value, value == 0)
    lines.append("-" * 56)
    v = report["viewers"]
    row("viewer history events received", v["received"])
    row("viewer resumes (recovered: false)", f"{notes['resumes']} ({notes['unrecovered_resumes']})")
    row("viewers died", notes["viewers_died"])
    d = report["danmaku"]
    row("danmaku sent / acked / resends", f"{d['sent']}/{d['acked']}/{d['resends']}")
    for s in report["sales"]:
        row(
            f"sale {s['sale'][:12]} orders/stock",
            f"{s['sold_qty']}/{s['stock']}",
            s["oversold"] == 0 and s["lost_acked"] == 0,
        )
    lat = report["refunds"]["latency_ms"]
    row("refunds (closed 4403)", f"{lat['n']}")
    row("refund->4403 p50/p99/max ms", f"{lat['p50']}/{lat['p99']}/{lat['max']}")
    row("likes sent / total", f"{report['likes']['sent']}/{report['likes']['total']}")
    lines.append("")
    lines.append("RESULT: " + ("PASS" if report["ok"] else "FAIL"))
    return "\n".join(lines)
