"""Handlers of the per-company daily report graph (see graph.yaml and README.md).

Pure standard library. Every handler derives what it needs from ``job.args`` and its
dependencies' artifacts (``job.inputs``), computes, and *returns* its outputs as
``overseer.Artifact`` values: no handler touches S3 itself. Randomness comes from
``job.random`` (seeded from the job id), so a rerun of the same graph id produces
bit-identical artifacts.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import html
import io
import json
import logging
import math
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import overseer

log = logging.getLogger("daily_report")

WINDOW_DAYS = 28
PRODUCTS = {  # product -> (unit price, relative popularity)
    "starter-plan": (19.0, 40),
    "team-plan": (79.0, 22),
    "business-plan": (249.0, 8),
    "api-credits-10k": (12.5, 30),
    "onboarding-session": (150.0, 5),
    "priority-support": (45.0, 9),
}
SOURCES = {  # traffic source -> (share of sessions, multiplier on conversion)
    "organic": (0.38, 1.0),
    "paid-search": (0.22, 1.25),
    "email": (0.12, 1.6),
    "social": (0.16, 0.55),
    "direct": (0.12, 1.35),
}
FUNNEL_STEPS = ("visited", "viewed_product", "added_to_cart", "started_checkout", "purchased")
# priority -> (share, median hours to resolve, SLA hours)
TICKET_PRIORITIES = {
    "urgent": (0.08, 2.0, 4),
    "high": (0.22, 6.0, 24),
    "normal": (0.5, 20.0, 72),
    "low": (0.2, 40.0, 168),
}
TICKET_CATEGORIES = ("billing", "login", "integration", "bug", "feature-request", "data-export")


# ---------------------------------------------------------------------------------------
# small helpers


def key(job: overseer.Job, name: str) -> str:
    """Where this company's report for this date keeps ``name``: relative, no leading '/'."""
    return f"{job.args['company_id']}/{job.args['date']}/{name}"


def window(job: overseer.Job) -> list[dt.date]:
    """The WINDOW_DAYS days ending on the report date (inclusive), oldest first."""
    end = dt.date.fromisoformat(str(job.args["date"]))
    days = int(job.args.get("window_days", WINDOW_DAYS))
    return [end - dt.timedelta(days=days - 1 - i) for i in range(days)]


def to_csv(header: list[str], rows: Iterable[Iterable[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def to_json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def read_input(job: overseer.Job, dependency: str, filename: str) -> bytes:
    """The bytes of the artifact called ``filename`` that dependency ``dependency`` stored."""
    for artifact in job.inputs.get(dependency, []):
        if artifact.key.rsplit("/", 1)[-1] == filename:
            return artifact.read()
    overseer.abort(f"dependency {dependency!r} stored no {filename!r}; it has {job.inputs.get(dependency)}")
    raise AssertionError("unreachable")


def read_csv(job: overseer.Job, dependency: str, filename: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(read_input(job, dependency, filename).decode("utf-8"))))


def read_json(job: overseer.Job, dependency: str, filename: str) -> Any:
    return json.loads(read_input(job, dependency, filename))


def weighted(rng: Any, weights: dict[str, float]) -> str:
    names = sorted(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (0 <= q <= 1) of a non-empty list."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ---------------------------------------------------------------------------------------
# fetch: synthetic but realistic inputs, deterministic from job.random


def fetch_orders(job: overseer.Job) -> list[overseer.Artifact]:
    """~4,000 orders over the window: weekly seasonality, growth, one promotion spike."""
    rng = job.random
    days = window(job)
    customers = 1400 + int(job.args["company_id"]) % 200
    # Each customer has a first-order day; later orders are repeat purchases.
    first_day = {c: rng.randrange(len(days)) for c in range(customers)}
    promo_day = rng.randrange(len(days) // 2, len(days) - 1)  # an anomaly to be found
    price_of = {p: price for p, (price, _) in PRODUCTS.items()}
    products = sorted(PRODUCTS)
    popularity = [PRODUCTS[p][1] for p in products]
    rows = []
    order_id = 0
    for index, day in enumerate(days):
        base = 120 + 2.2 * index  # growing business
        if day.weekday() >= 5:
            base *= 0.6
        if index == promo_day:
            base *= 2.4
        active = [c for c, first in first_day.items() if first <= index]
        new = [c for c in active if first_day[c] == index]
        count = max(0, int(rng.gauss(base, base * 0.08)))
        for _ in range(count):
            customer = rng.choice(new) if new and rng.random() < 0.35 else rng.choice(active)
            product = rng.choices(products, weights=popularity)[0]
            quantity = 1 if product.endswith("plan") else rng.randint(1, 4)
            discount = 0.2 if index == promo_day else 0.0
            unit_price = round(price_of[product] * (1 - discount), 2)
            order_id += 1
            minute = rng.randrange(24 * 60)
            rows.append(
                [
                    f"o-{job.args['company_id']}-{order_id:06d}",
                    f"{day.isoformat()}T{minute // 60:02d}:{minute % 60:02d}:00Z",
                    f"c-{customer:05d}",
                    product,
                    quantity,
                    f"{unit_price:.2f}",
                    rng.choice(["web", "web", "web", "mobile", "sales"]),
                ]
            )
    header = ["order_id", "ordered_at", "customer_id", "product", "quantity", "unit_price", "channel"]
    return [overseer.Artifact(key=key(job, "inputs/orders.csv"), data=to_csv(header, rows))]


def fetch_sessions(job: overseer.Job) -> list[overseer.Artifact]:
    """~8,000 web sessions, each with how far down the purchase funnel it got."""
    rng = job.random
    rows = []
    base_rates = (0.62, 0.34, 0.55, 0.58)  # step to step: view, cart, checkout, purchase
    outage_day = rng.randrange(len(window(job)))  # a day the checkout page was broken
    for index, day in enumerate(window(job)):
        count = int(rng.gauss(330, 30) * (0.7 if day.weekday() >= 5 else 1.0))
        for n in range(count):
            source = weighted(rng, {s: share for s, (share, _) in SOURCES.items()})
            lift = SOURCES[source][1]
            reached = 1
            for step, rate in enumerate(base_rates):
                rate = min(0.95, rate * (lift if step >= 1 else 1.0))
                if index == outage_day and step == 3:
                    rate *= 0.15
                if rng.random() >= rate:
                    break
                reached += 1
            pages = reached + int(rng.expovariate(0.4))
            rows.append(
                [f"s-{index:02d}-{n:05d}", day.isoformat(), f"v-{rng.randrange(20000):05d}", source, pages]
                + [1 if reached > s else 0 for s in range(len(FUNNEL_STEPS))]
            )
    header = ["session_id", "date", "visitor_id", "source", "pages", *FUNNEL_STEPS]
    return [overseer.Artifact(key=key(job, "inputs/sessions.csv"), data=to_csv(header, rows))]


def fetch_tickets(job: overseer.Job) -> list[overseer.Artifact]:
    """~1,500 support tickets with lognormal resolution times by priority; some still open."""
    rng = job.random
    days = window(job)
    end = dt.datetime.combine(days[-1], dt.time(23, 59), tzinfo=dt.UTC)
    rows = []
    for index, day in enumerate(days):
        for n in range(int(rng.gauss(52, 8))):
            priority = weighted(rng, {p: share for p, (share, _, _) in TICKET_PRIORITIES.items()})
            median_hours = TICKET_PRIORITIES[priority][1]
            opened = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC) + dt.timedelta(
                minutes=rng.randrange(24 * 60)
            )
            hours = rng.lognormvariate(math.log(median_hours), 0.8)
            resolved = opened + dt.timedelta(hours=hours)
            rows.append(
                [
                    f"t-{index:02d}-{n:04d}",
                    opened.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    resolved.strftime("%Y-%m-%dT%H:%M:%SZ") if resolved <= end else "",
                    priority,
                    rng.choice(TICKET_CATEGORIES),
                    f"c-{rng.randrange(1400):05d}",
                ]
            )
    header = ["ticket_id", "opened_at", "resolved_at", "priority", "category", "customer_id"]
    return [overseer.Artifact(key=key(job, "inputs/tickets.csv"), data=to_csv(header, rows))]


# ---------------------------------------------------------------------------------------
# metrics, in parallel


def revenue(job: overseer.Job) -> list[overseer.Artifact]:
    """Revenue and order counts by day, and by product over the window."""
    orders = read_csv(job, "fetch_orders", "orders.csv")
    by_day: dict[str, list[float]] = {d.isoformat(): [0.0, 0] for d in window(job)}
    by_product: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0])
    for order in orders:
        amount = int(order["quantity"]) * float(order["unit_price"])
        day = by_day[order["ordered_at"][:10]]
        day[0] += amount
        day[1] += 1
        product = by_product[order["product"]]
        product[0] += amount
        product[1] += 1
        product[2] += int(order["quantity"])
    total = sum(v[0] for v in by_day.values())
    daily = to_csv(["date", "revenue", "orders"], [(d, f"{r:.2f}", n) for d, (r, n) in by_day.items()])
    products = to_csv(
        ["product", "revenue", "orders", "units", "share_pct"],
        [
            (p, f"{r:.2f}", n, u, f"{pct(r, total):.2f}")
            for p, (r, n, u) in sorted(by_product.items(), key=lambda kv: -kv[1][0])
        ],
    )
    return [
        overseer.Artifact(key=key(job, "metrics/revenue_by_day.csv"), data=daily),
        overseer.Artifact(key=key(job, "metrics/revenue_by_product.csv"), data=products),
    ]


def funnel(job: overseer.Job) -> list[overseer.Artifact]:
    """Conversion funnel overall and per traffic source, plus sessions/conversion per day."""
    sessions = read_csv(job, "fetch_sessions", "sessions.csv")
    overall = Counter()
    per_source: dict[str, Counter[str]] = defaultdict(Counter)
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    for session in sessions:
        for step in FUNNEL_STEPS:
            if session[step] == "1":
                overall[step] += 1
                per_source[session["source"]][step] += 1
                per_day[session["date"]][step] += 1

    def steps(counts: Counter[str]) -> list[dict[str, Any]]:
        out = []
        for i, step in enumerate(FUNNEL_STEPS):
            previous = counts[FUNNEL_STEPS[i - 1]] if i else counts[step]
            out.append(
                {
                    "step": step,
                    "sessions": counts[step],
                    "from_previous_pct": pct(counts[step], previous),
                    "from_start_pct": pct(counts[step], counts[FUNNEL_STEPS[0]]),
                }
            )
        return out

    result = {
        "overall": steps(overall),
        "by_source": {source: steps(counts) for source, counts in sorted(per_source.items())},
    }
    daily = to_csv(
        ["date", "sessions", "purchases", "conversion_pct"],
        [
            (d, c["visited"], c["purchased"], f"{pct(c['purchased'], c['visited']):.2f}")
            for d, c in sorted(per_day.items())
        ],
    )
    return [
        overseer.Artifact(key=key(job, "metrics/funnel.json"), data=to_json(result)),
        overseer.Artifact(key=key(job, "metrics/sessions_by_day.csv"), data=daily),
    ]


def retention(job: overseer.Job) -> list[overseer.Artifact]:
    """Weekly cohorts by first order: the share of each cohort ordering again in later weeks."""
    orders = read_csv(job, "fetch_orders", "orders.csv")
    start = window(job)[0]
    weeks_of: dict[str, set[int]] = defaultdict(set)
    for order in orders:
        week = (dt.date.fromisoformat(order["ordered_at"][:10]) - start).days // 7
        weeks_of[order["customer_id"]].add(week)
    cohorts: dict[int, list[set[int]]] = defaultdict(list)
    for weeks in weeks_of.values():
        cohorts[min(weeks)].append(weeks)
    horizon = max(cohorts) + 1 if cohorts else 0
    rows = []
    for cohort in sorted(cohorts):
        members = cohorts[cohort]
        active = [sum(1 for w in members if cohort + k in w) for k in range(horizon - cohort)]
        rows.append(
            [f"week {cohort}", len(members)] + [f"{pct(n, len(members)):.1f}" for n in active] + [""] * cohort
        )
    header = ["cohort", "customers"] + [f"week+{k}" for k in range(horizon)]
    return [overseer.Artifact(key=key(job, "metrics/retention_cohorts.csv"), data=to_csv(header, rows))]


# ``tickets`` shows a stage-map handler: pre_process checks and enriches the job,
# process computes, post_process adds a small manifest of what process produced.


def tickets_pre_process(job: overseer.Job) -> overseer.Job:
    priorities = job.args.get("priorities", sorted(TICKET_PRIORITIES))
    unknown = set(priorities) - set(TICKET_PRIORITIES)
    if unknown:
        overseer.abort(f"unknown ticket priorities {sorted(unknown)}")  # bad config: no retry
    sla = {p: TICKET_PRIORITIES[p][2] for p in priorities}
    return dataclasses.replace(job, args={**job.args, "sla_hours": sla})


def tickets_process(job: overseer.Job) -> list[overseer.Artifact]:
    rows = read_csv(job, "fetch_tickets", "tickets.csv")
    sla = job.args["sla_hours"]
    hours: dict[str, list[float]] = defaultdict(list)
    still_open: Counter[str] = Counter()
    by_category: Counter[str] = Counter()
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        if row["priority"] not in sla:
            continue
        by_category[row["category"]] += 1
        per_day[row["opened_at"][:10]]["opened"] += 1
        if not row["resolved_at"]:
            still_open[row["priority"]] += 1
            continue
        opened = dt.datetime.fromisoformat(row["opened_at"].replace("Z", "+00:00"))
        resolved = dt.datetime.fromisoformat(row["resolved_at"].replace("Z", "+00:00"))
        hours[row["priority"]].append((resolved - opened).total_seconds() / 3600)
    by_priority = {}
    for priority in sorted(sla, key=lambda p: TICKET_PRIORITIES[p][2]):
        values = hours[priority]
        breaches = sum(1 for h in values if h > sla[priority])
        by_priority[priority] = {
            "resolved": len(values),
            "open": still_open[priority],
            "median_hours": round(statistics.median(values), 2) if values else None,
            "p90_hours": round(quantile(values, 0.9), 2) if values else None,
            "sla_hours": sla[priority],
            "sla_breach_pct": pct(breaches, len(values)),
        }
    result = {"by_priority": by_priority, "by_category": dict(by_category.most_common())}
    daily = to_csv(["date", "opened"], [(d, c["opened"]) for d, c in sorted(per_day.items())])
    return [
        overseer.Artifact(key=key(job, "metrics/tickets.json"), data=to_json(result)),
        overseer.Artifact(key=key(job, "metrics/tickets_by_day.csv"), data=daily),
    ]


def tickets_post_process(job: overseer.Job, result: list[overseer.Artifact]) -> list[overseer.Artifact]:
    manifest = {a.key: len(a.data or b"") for a in result}
    return [*result, overseer.Artifact(key=key(job, "metrics/tickets.manifest.json"), data=to_json(manifest))]


def anomalies(job: overseer.Job) -> list[overseer.Artifact]:
    """Days whose revenue, sessions, conversion or ticket volume is |z| >= threshold."""
    threshold = float(job.args.get("z_threshold", 2.5))
    series: dict[str, dict[str, float]] = {
        "revenue": {r["date"]: float(r["revenue"]) for r in read_csv(job, "revenue", "revenue_by_day.csv")},
        "sessions": {r["date"]: float(r["sessions"]) for r in read_csv(job, "funnel", "sessions_by_day.csv")},
        "conversion_pct": {
            r["date"]: float(r["conversion_pct"]) for r in read_csv(job, "funnel", "sessions_by_day.csv")
        },
        "tickets_opened": {
            r["date"]: float(r["opened"]) for r in read_csv(job, "tickets", "tickets_by_day.csv")
        },
    }
    found = []
    for metric, values in series.items():
        numbers = list(values.values())
        mean, stdev = statistics.fmean(numbers), statistics.pstdev(numbers)
        for day, value in values.items():
            z = (value - mean) / stdev if stdev else 0.0
            if abs(z) >= threshold:
                found.append(
                    {"metric": metric, "date": day, "value": value, "mean": round(mean, 2), "z": round(z, 2)}
                )
    found.sort(key=lambda a: (a["date"], a["metric"]))
    return [
        overseer.Artifact(
            key=key(job, "metrics/anomalies.json"), data=to_json({"z_threshold": threshold, "found": found})
        )
    ]


# ---------------------------------------------------------------------------------------
# join and report


def summary(job: overseer.Job) -> list[overseer.Artifact]:
    """The join: every metric's artifacts, read through job.inputs, in one JSON document."""
    daily = read_csv(job, "revenue", "revenue_by_day.csv")
    products = read_csv(job, "revenue", "revenue_by_product.csv")
    report_day = str(job.args["date"])
    today = next(r for r in daily if r["date"] == report_day)
    last7 = daily[-7:]
    prev7 = daily[-14:-7]
    revenue_7 = sum(float(r["revenue"]) for r in last7)
    revenue_prev7 = sum(float(r["revenue"]) for r in prev7)
    funnel_data = read_json(job, "funnel", "funnel.json")
    ticket_data = read_json(job, "tickets", "tickets.json")
    retention_rows = read_csv(job, "retention", "retention_cohorts.csv")
    found = read_json(job, "anomalies", "anomalies.json")
    document = {
        "company_id": job.args["company_id"],
        "date": report_day,
        "window_days": len(daily),
        "inputs": {
            dep: [{"key": a.key, "size": a.size, "sha256": a.sha256} for a in arts]
            for dep, arts in sorted(job.inputs.items())
        },
        "headline": {
            "revenue_today": round(float(today["revenue"]), 2),
            "orders_today": int(today["orders"]),
            "revenue_last_7_days": round(revenue_7, 2),
            "revenue_change_vs_previous_7_days_pct": round(pct(revenue_7 - revenue_prev7, revenue_prev7), 2),
            "conversion_pct": funnel_data["overall"][-1]["from_start_pct"],
            "urgent_ticket_median_hours": ticket_data["by_priority"].get("urgent", {}).get("median_hours"),
            "anomalies": len(found["found"]),
        },
        "revenue_by_day": [{"date": r["date"], "revenue": float(r["revenue"])} for r in daily],
        "top_products": products[:5],
        "funnel": funnel_data,
        "retention": retention_rows,
        "tickets": ticket_data,
        "anomalies": found,
    }
    return [overseer.Artifact(key=key(job, "report/summary.json"), data=to_json(document))]


def svg_chart(points: list[tuple[str, float]], marked: set[str], width: int = 720, height: int = 220) -> str:
    """An inline SVG line chart of (label, value) points; labels in ``marked`` get a red dot."""
    pad_left, pad_bottom, pad_top = 60, 30, 10
    top = max(v for _, v in points) * 1.1 or 1.0
    step = (width - pad_left - 10) / max(1, len(points) - 1)

    def xy(i: int, value: float) -> tuple[float, float]:
        return pad_left + i * step, pad_top + (height - pad_top - pad_bottom) * (1 - value / top)

    coords = [xy(i, v) for i, (_, v) in enumerate(points)]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="daily revenue">',
        f'<line x1="{pad_left}" y1="{height - pad_bottom}" x2="{width - 10}" y2="{height - pad_bottom}" '
        'stroke="#999"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        value = top * fraction
        _, y = xy(0, value)
        parts.append(
            f'<text x="{pad_left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{value:,.0f}</text>'
            f'<line x1="{pad_left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#eee"/>'
        )
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    parts.append(f'<polyline fill="none" stroke="#2563eb" stroke-width="2" points="{path}"/>')
    for i, ((label, value), (x, y)) in enumerate(zip(points, coords, strict=True)):
        if label in marked:
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#dc2626">'
                f"<title>{html.escape(label)}: {value:,.2f}</title></circle>"
            )
        if i % 7 == 0 or i == len(points) - 1:
            parts.append(
                f'<text x="{x:.1f}" y="{height - 10}" font-size="11" text-anchor="middle">'
                f"{html.escape(label[5:])}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_report(job: overseer.Job) -> list[overseer.Artifact]:
    """The HTML report (tables and an inline SVG chart), written to scratch and returned as a file."""
    data = read_json(job, "summary", "summary.json")
    head = data["headline"]
    revenue_marked = {a["date"] for a in data["anomalies"]["found"] if a["metric"] == "revenue"}
    title = f"Daily report: company {data['company_id']}, {data['date']}"
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        html_table(
            [
                "revenue today",
                "orders today",
                "revenue, last 7 days",
                "vs previous 7 days",
                "conversion",
                "urgent tickets, median",
                "anomalies",
            ],
            [
                [
                    f"{head['revenue_today']:,.2f}",
                    head["orders_today"],
                    f"{head['revenue_last_7_days']:,.2f}",
                    f"{head['revenue_change_vs_previous_7_days_pct']:+.1f}%",
                    f"{head['conversion_pct']:.2f}%",
                    f"{head['urgent_ticket_median_hours']} h",
                    head["anomalies"],
                ]
            ],
        ),
        f"<h2>Revenue by day ({data['window_days']} days; red: anomalies)</h2>",
        svg_chart([(p["date"], p["revenue"]) for p in data["revenue_by_day"]], revenue_marked),
        "<h2>Top products</h2>",
        html_table(
            ["product", "revenue", "orders", "units", "share %"],
            [
                [p["product"], p["revenue"], p["orders"], p["units"], p["share_pct"]]
                for p in data["top_products"]
            ],
        ),
        "<h2>Conversion funnel</h2>",
        html_table(
            ["step", "sessions", "from previous %", "from start %"],
            [
                [s["step"], s["sessions"], s["from_previous_pct"], s["from_start_pct"]]
                for s in data["funnel"]["overall"]
            ],
        ),
        html_table(
            ["source", "sessions", "purchases", "conversion %"],
            [
                [source, steps[0]["sessions"], steps[-1]["sessions"], steps[-1]["from_start_pct"]]
                for source, steps in data["funnel"]["by_source"].items()
            ],
        ),
        "<h2>Retention by weekly cohort (% of cohort ordering)</h2>",
        html_table(list(data["retention"][0]), [list(r.values()) for r in data["retention"]])
        if data["retention"]
        else "<p>no cohorts</p>",
        "<h2>Support tickets</h2>",
        html_table(
            ["priority", "resolved", "open", "median h", "p90 h", "SLA h", "SLA breached %"],
            [
                [
                    p,
                    t["resolved"],
                    t["open"],
                    t["median_hours"],
                    t["p90_hours"],
                    t["sla_hours"],
                    t["sla_breach_pct"],
                ]
                for p, t in data["tickets"]["by_priority"].items()
            ],
        ),
        f"<h2>Anomalies (|z| &ge; {data['anomalies']['z_threshold']})</h2>",
        html_table(
            ["date", "metric", "value", "mean", "z"],
            [[a["date"], a["metric"], a["value"], a["mean"], a["z"]] for a in data["anomalies"]["found"]],
        )
        if data["anomalies"]["found"]
        else "<p>none</p>",
    ]
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;color:#111}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}"
        "th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}"
        "th{background:#f3f4f6}td:first-child,th:first-child{text-align:left}"
    )
    page = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    path = job.scratch / "report.html"
    path.write_text(page, encoding="utf-8")
    return [overseer.Artifact(key=key(job, "report/report.html"), file=path, content_type="text/html")]


# ---------------------------------------------------------------------------------------
# middleware, via overseer.harness


def timed(stage: Callable[[overseer.Job], Any]) -> Callable[[overseer.Job], Any]:
    """Log how long the stage took and how many bytes it returned."""

    def run(job: overseer.Job) -> Any:
        started = time.perf_counter()
        result = stage(job)
        size = sum(len(a.data) if a.data is not None else 0 for a in result or [])
        log.warning(
            "%s: %s took %.3fs, returned %d artifact(s), %d bytes inline",
            job.id,
            job.type,
            time.perf_counter() - started,
            len(result or []),
            size,
        )
        return result

    return run


_HANDLERS: dict[str, Any] = {
    "fetch_orders": fetch_orders,
    "fetch_sessions": fetch_sessions,
    "fetch_tickets": fetch_tickets,
    "revenue": revenue,
    "funnel": funnel,
    "retention": retention,
    "tickets": {
        "pre_process": tickets_pre_process,
        "process": tickets_process,
        "post_process": tickets_post_process,
    },
    "anomalies": anomalies,
    "summary": summary,
    "render_report": render_report,
}

HANDLERS = {name: overseer.harness(handler, timed) for name, handler in _HANDLERS.items()}
