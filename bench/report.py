"""Results → a console table, ``RESULTS.md``, ``results.json`` and ``throughput.png`` (drawn with Pillow)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

SERVER_LABELS = {
    "served": "served (python -m service)",
    "served-fp32": "served, float32 TensorFlow",
    "served-shadow": "served, a copy as version 2 shadowing 10% of requests",
    "served-shadow-off": "the same process, its shadow turned off",
    "served-observed-off": "served, tracing and payload logging off (interleaved with the next two)",
    "served-traced": "served, OpenTelemetry tracing of every request to a local OTLP receiver",
    "served-logged": "served, payload logging (all) to a local CloudEvents sink",
    "served-gil-default": "served as it runs (CNN_GIL_SWITCH_INTERVAL_MS; interleaved with the next)",
    "served-gil-5ms": "served with Python's default GIL switch interval (5 ms)",
    "naive": "naive FastAPI",
    "naive-logged": "naive FastAPI, uvicorn's default access log",
    "litserve": "LitServe (served engine)",
    "mlserver-1": "MLServer, 1 worker (served engine)",
    "mlserver-2": "MLServer, 2 workers (served engine)",
    "floor": "bare ASGI floor: uvicorn, the service's batcher and engine, nothing else",
}
COLORS = {"served": (31, 119, 180), "served-fp32": (148, 103, 189), "naive": (214, 39, 40), "litserve": (44, 160, 44)}


# -- tables --------------------------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def measurement_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for m in results["measurements"]:
        lat = m["latency_ms"]
        extra = m["extra"]
        rows.append(
            [
                m["server"], m["scenario"], str(m["connections"]), _fmt(m["images_per_s"]),
                _fmt(m["requests_per_s"]), _fmt(lat["p50"], 2), _fmt(lat["p95"], 2), _fmt(lat["p99"], 2),
                str(m["error_count"]), _fmt(extra.get("server_cpu_ms_per_image"), 2),
                _fmt(extra.get("server_cpu_ms_per_request"), 2), _fmt(extra.get("layer_cpu_ms_per_request"), 2),
                _fmt(extra.get("server_cores"), 2), _fmt(extra.get("wrk_cores"), 2),
                _fmt(extra.get("foreign_cores"), 2), _fmt(extra.get("mean_batch_size"), 1),
            ]
        )  # fmt: skip
    return rows


MEASUREMENT_HEADER = [
    "server", "scenario", "conns", "img/s", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors",
    "server CPU ms/img", "server CPU ms/req", "beyond model ms/req", "server cores", "wrk cores", "other cores",
    "mean batch",
]  # fmt: skip


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    line = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([line.format(*header), line.format(*("-" * w for w in widths))] + [line.format(*r) for r in rows])


def target_rows(results: dict[str, Any]) -> list[list[str]]:
    return [
        [t["name"], _fmt(t["measured"], 2), t["goal"], "yes" if t["met"] else "NO" if t["met"] is False else "–"]
        for t in results["targets"]
    ]


def console_summary(results: dict[str, Any]) -> str:
    limit, served, engine = results["limit"], results["served"], results.get("engine_limit")
    parts = [
        text_table(MEASUREMENT_HEADER, measurement_rows(results)),
        "",
        f"in-process limit: {limit['best']['images_per_s']:,.0f} img/s at batch {limit['best']['batch_size']}; "
        f"batch-1 call p50 {limit['batch1_call_ms']['p50']:.2f} ms",
        f"served engine ({results.get('engine')}) in-process: {engine['best']['images_per_s']:,.0f} img/s at batch "
        f"{engine['best']['batch_size']}; batch-1 call p50 {engine['batch1_call_ms']['p50']:.2f} ms"
        if engine
        else "served engine: not measured",
        f"served: start to ready {served['ready_s']:.2f} s, peak RSS {served['peak_rss_mib']:.0f} MiB",
        "",
        text_table(["target", "measured", "goal", "met"], target_rows(results)),
    ]
    return "\n".join(parts)


# -- RESULTS.md ---------------------------------------------------------------------------------------
def results_markdown(results: dict[str, Any], plot_name: str) -> str:
    env = results["environment"]
    limit = results["limit"]
    runs = limit.get("runs", [limit["sweep"]])
    served = results["served"]
    out = [
        "# Benchmark results",
        "",
        f"- Date: {env['date']}",
        f"- CPU: {env['cpu_model']}, {env['cores']} cores; load average at start {env['loadavg_start']}",
        f"- Model: `{env['model_dir']}` ({env['model_summary']})",
        f"- Load generator: {env['wrk']} (closed loop, Lua script `bench/lua/post.lua`), 127.0.0.1 only; "
        f"{env['warmup_s']} s warm-up + {env['duration_s']} s per measurement",
        "- Versions: "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + (f"; MLServer {env['mlserver']} in its own venv" if env.get("mlserver") else ""),
        "- HTTP: the service runs uvicorn with uvloop and httptools; the naive baseline, uvicorn's auto choice "
        f"({env['uvicorn_loop_http']}); no access logs, but for the one reference run of the naive server",
        f"- Service settings: {env['service_settings']}",
        "",
        "## Throughput and latency",
        "",
        'Scenarios: **a** one image per request, TF-Serving JSON `{"instances": [28×28×1 floats]}`; '
        "**b** one PNG per request, native multipart; **c** 64 images per request, v2 binary FP32 tensor; "
        "**d** the same batches over gRPC (v2 ModelInfer, raw FP32 contents), 8 calls in flight on one "
        "connection, from h2load (nghttp2's HTTP/2 load generator, its CPU in the wrk column; a call counts as "
        "answered by its message, so a gRPC error is counted though it answers HTTP 200); one image per request: "
        "**e** v2 "
        "JSON (flat `data`), **f** v2 binary, **g** native raw PNG body, **h** gRPC ModelInfer (raw contents, "
        "as many calls in flight on one connection as the other scenarios have connections); 64 images per "
        "request: **i** v2 JSON, **j** TF Serving JSON rows.",
        f"Peers on the served engine ({results.get('engine') or 'not known'}): MLServer with its adaptive batching "
        "(64 images, 2 ms) and 1 or 2 parallel inference workers, running `bench/mlserver_runtime.py` on the "
        "OpenVINO model the service compiles; LitServe on the same. The naive server runs float32 TensorFlow. "
        "`floor` (`bench/floor_server.py`): a bare ASGI callable on uvicorn around the service's own batcher and "
        "that engine, doing only what the v2 and TF Serving wire formats need (simdjson's parse, no routing, "
        "validation, policy, per-request metrics or error mapping): the least a Python serving layer costs here.",
        "`server CPU ms/img` and `/req`: CPU time of the server's processes per image and per request; `beyond "
        "model ms/req`: the service's (or the floor's) CPU per request less what the engine costs in-process for "
        "those images at the measured mean batch size (the serving layer's own cost); `other cores`: CPU used on "
        "the machine by anything but the server and wrk during the measurement (noise); `mean batch`: images per "
        "model call (from the batcher's `cnn_batch_size` metric).",
        "",
        markdown_table(MEASUREMENT_HEADER, measurement_rows(results)),
        "",
        f"![throughput and p99 latency vs concurrency]({plot_name})",
        "",
        "## In-process limit",
        "",
        f'`tf.saved_model.load(...).signatures["serving_default"]` called back to back in one process '
        f"(TensorFlow {limit['tensorflow']}). Batch-1 call: p50 {limit['batch1_call_ms']['p50']:.2f} ms, "
        f"p99 {limit['batch1_call_ms']['p99']:.2f} ms{_batch1_after_text(results)}. The sweep runs before the "
        "served model's scenarios and again after them; the limit is the faster of the two at each batch size.",
        "",
        markdown_table(
            ["batch size", "img/s (limit)", "ms per call", *(f"img/s run {i + 1}" for i in range(len(runs)))],
            [
                [
                    str(r["batch_size"]),
                    _fmt(r["images_per_s"]),
                    _fmt(r["call_ms"], 2),
                    *(_fmt(run[i]["images_per_s"]) for run in runs),
                ]
                for i, r in enumerate(limit["sweep"])
            ],
        ),
        "",
        "## Targets",
        "",
        markdown_table(["target", "measured", "goal", "met"], target_rows(results)),
        "",
        "Answer checks (one request per server and scenario, class compared with the in-process call): "
        + (", ".join(f"{k} {v}" for k, v in results["checks"].items()) or "none"),
        "",
        f"Start to ready (spawn → `/health/ready` 200): {served['ready_s']:.2f} s. "
        f"Peak RSS: {served['peak_rss_mib']:.0f} MiB (VmHWM; sampled VmRSS max under 64 connections "
        f"{served['load_rss_mib']:.0f} MiB).",
        "",
    ]
    out += engine_limit_markdown(results)
    out += precision_markdown(results)
    out += shadow_markdown(results)
    out += bounds_markdown(results)
    out += profile_markdown(results.get("profile"))
    out += results.get("notes", [])
    return "\n".join(out) + "\n"


def engine_limit_markdown(results: dict[str, Any]) -> list[str]:
    """The served engine called in-process: what the same-engine targets and the layer cost are measured against."""
    engine = results.get("engine_limit")
    if not engine:
        return []
    return [
        f"## In-process limit of the served engine ({results.get('engine')})",
        "",
        "The engine the service built for the model, called back to back in one process as its batch threads "
        f"call it. Batch-1 call: p50 {engine['batch1_call_ms']['p50']:.2f} ms, p99 "
        f"{engine['batch1_call_ms']['p99']:.2f} ms. `CPU ms/img`: the process's CPU time per image (all threads).",
        "",
        markdown_table(
            ["batch size", "img/s", "ms per call", "CPU ms/img"],
            [
                [str(r["batch_size"]), _fmt(r["images_per_s"]), _fmt(r["call_ms"], 2), _fmt(r["cpu_ms_per_image"], 3)]
                for r in engine["sweep"]
            ],
        ),
        "",
    ]


def shadow_markdown(results: dict[str, Any]) -> list[str]:
    """What ``served-shadow``'s shadow version saw: requests compared and dropped, agreement, latency."""
    rollout = (results.get("served_shadow") or {}).get("shadow")
    if not rollout:
        return []
    share = f"{rollout['shadow']['fraction']:.0%}"
    lines = [
        "## Shadow version",
        "",
        f"`served-shadow` serves the model as version 1 and a copy as version 2, the shadow of {share} of the "
        "requests (run in the background, after each answer). Its scenario a runs alternate with the shadow "
        "off (`served-shadow-off`) and on, the config file rewritten between them, in the same process.",
    ]
    for c in rollout["comparisons"]:
        lines.append(
            f"- live {c['live_version']} / shadow {c['shadow_version']}: {c['requests']:,} requests "
            f"({c['predictions']:,} images) compared, top-1 agreement {c['agreement']:.2%}, shadow latency p50 "
            f"{c['latency']['p50_ms']:.2f} ms, p95 {c['latency']['p95_ms']:.2f} ms."
        )
    dropped = ", ".join(f"{reason} {count:,}" for reason, count in rollout["dropped"].items()) or "none"
    return [*lines, f"- dropped: {dropped}.", ""]


def precision_markdown(results: dict[str, Any]) -> list[str]:
    """What the served model runs on, the timings behind the choice, and the accuracy of every setting."""
    plan = (results.get("served") or {}).get("plan")
    lines = ["## Runtime and precision", ""]
    if plan:
        lines += [
            f"`served` (defaults: `CNN_RUNTIME=auto`, `CNN_PRECISION=auto`) chose **{plan['runtime']}/"
            f"{plan['precision']}** ({plan['chosen_by']}) on {plan['device']}; batches padded up to "
            f"{plan['buckets'] or 'no other size'} ({plan['buckets_from']}). `served-fp32` is the same service with "
            "`CNN_RUNTIME=tensorflow CNN_PRECISION=fp32`: the SavedModel as exported. Timings the service took at "
            "load (fastest call, ms, per batch size; geometric mean as the score):",
            "",
        ]
        sizes = list(plan["timings"][0]["call_ms"])
        rows = [
            [f"{t['runtime']}/{t['precision']}", _fmt(100 * t["accuracy"], 2) if t["accuracy"] is not None else "–",
             *(_fmt(t["call_ms"][size], 2) for size in sizes), _fmt(t["score_ms"], 2)]
            for t in plan["timings"]
        ]  # fmt: skip
        lines += [markdown_table(["candidate", "recorded accuracy %", *sizes, "score ms"], rows), ""]
        lines += [f"Not candidates: {r['runtime']}/{r['precision']} ({r['reason']})." for r in plan["refused"]]
        lines.append("")
    accuracy = results.get("accuracy") or []
    if accuracy:
        lines += [
            "Accuracy of the served model through HTTP (`/v2/models/.../infer`, binary FP32, 250 images per request) "
            "on the 10,000 Fashion-MNIST test images, the service started once per setting:",
            "",
            markdown_table(
                ["CNN_RUNTIME/CNN_PRECISION", "served on", "accuracy %", "correct", "recorded in the card %"],
                [
                    [
                        row["setting"],
                        row["served"],
                        _fmt(100 * row["accuracy"], 2),
                        f"{row['correct']:,}",
                        _fmt(100 * row["recorded"], 2) if row.get("recorded") is not None else "–",
                    ]
                    if "accuracy" in row
                    else [row["setting"], "not served", "–", "–", row["error"]]
                    for row in accuracy
                ],
            ),
            "",
        ]
    return lines if len(lines) > 2 else []


def find_measurement(measurements: list[dict], server: str, scenario: str, connections: int) -> dict | None:
    """The measurement of one server in one scenario at one connection count, if it was taken."""
    return next(
        (m for m in measurements if (m["server"], m["scenario"], m["connections"]) == (server, scenario, connections)),
        None,
    )


def _images_per_s(results: dict[str, Any], server: str, scenario: str, connections: int) -> float | None:
    found = find_measurement(results["measurements"], server, scenario, connections)
    return found["images_per_s"] if found else None


def _batch1_after_text(results: dict[str, Any]) -> str:
    after = (results.get("batch1_call_p50_ms") or {}).get("after")
    engine = results.get("engine") or "the served engine"
    return f" ({engine}: p50 {after:.2f} ms, timed right after the served c=1 run)" if after else ""


def bounds_markdown(results: dict[str, Any]) -> list[str]:
    """What the measurements allow at best: no server can beat the in-process limit."""
    limit = results["limit"]
    best = limit["best"]["images_per_s"]
    top = max((m["connections"] for m in results["measurements"] if m["scenario"] == "a"), default=64)
    lines = []
    for peer in ("naive", "litserve"):
        rate = _images_per_s(results, peer, "a", top)
        if rate:
            lines.append(
                f"- a, c={top}: {report_label(peer)} reaches {rate:,.0f} img/s, so served / {report_label(peer)} "
                f"is at most {best / rate:.2f} (in-process limit {best:,.0f} img/s / {rate:,.0f})."
            )
    logged, served = _images_per_s(results, "naive-logged", "a", top), _images_per_s(results, "served", "a", top)
    if logged and served:
        lines.append(
            f"- a, c={top}, for reference: run as plain `uvicorn` (its access log on, as by default), the naive "
            f"server reaches {logged:,.0f} img/s; served / that = {served / logged:.2f}. The compared servers above "
            "run without access logs, like the service's default."
        )
    sweep = {row["batch_size"]: row["images_per_s"] for row in limit["sweep"]}
    if 64 in sweep:
        lines.append(
            f"- c: a 64-image request is one model call of batch 64, which runs at {sweep[64]:,.0f} img/s in-process, "
            f"{sweep[64] / best:.2f} of the best batch size ({limit['best']['batch_size']})."
        )
    c1 = next(
        (m for m in results["measurements"] if (m["server"], m["scenario"], m["connections"]) == ("served", "a", 1)),
        None,
    )
    if c1:
        batch1 = results.get("batch1_call_p50_ms") or {"mean": limit["batch1_call_ms"]["p50"]}
        overhead = c1["latency_ms"]["p50"] - batch1["mean"]
        lines.append(
            f"- a, c=1: the served p50 is {overhead:.2f} ms above the served engine's batch-1 call (HTTP, parsing, "
            "batching); the call's p50 is the mean of one timing right after the served c=1 run and one in the "
            "engine's sweep, as the machine's speed drifts within minutes."
        )
    return ["## Bounds", "", *lines, ""] if lines else []


def report_label(server: str) -> str:
    return SERVER_LABELS.get(server, server)


def profile_markdown(profile: dict[str, Any] | None) -> list[str]:
    if not profile:
        return []
    threads = profile["per_request_ms"]["threads"]
    loop = profile["per_request_ms"]["event_loop"]
    total = sum(threads.values())
    loop_total = sum(loop.values()) or 1.0
    lines = [
        "## Where the service's CPU goes",
        "",
        f"Scenario a at {profile['connections']} connections ({profile['requests_per_s']:.0f} req/s), a "
        f"{profile['window_s']:.1f} s window inside the load. CPU per thread from `/proc/<pid>/task/*/stat`, per "
        f"request = CPU / (req/s × window); the event loop's CPU split by {profile['samples']} py-spy samples "
        "(each counted at its innermost frame that matches a category). Cyclic garbage collection has no frame "
        "of its own: it shows up in the frame that allocated, mostly JSON parsing (many small lists and floats).",
        "",
        markdown_table(
            ["thread group", "CPU ms/request", "share"],
            [[k, _fmt(v, 3), f"{v / total:.0%}"] for k, v in sorted(threads.items(), key=lambda kv: -kv[1])]
            + [["total", _fmt(total, 3), "100%"]],
        ),
        "",
        markdown_table(
            ["event loop: category", "CPU ms/request", "share of loop"],
            [[k, _fmt(v, 3), f"{v / loop_total:.0%}"] for k, v in sorted(loop.items(), key=lambda kv: -kv[1])],
        ),
        "",
    ]
    return lines


# -- plot ------------------------------------------------------------------------------------------------
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


class _Panel:
    """One chart: log2 x axis (concurrency), linear or log10 y axis."""

    def __init__(self, draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], xs: list[int]) -> None:
        self.draw, self.box, self.xs = draw, box, xs
        self.font = _font(14)
        self.y_min, self.y_max, self.log_y = 0.0, 1.0, False

    def x(self, value: float) -> float:
        left, _, right, _ = self.box
        lo, hi = math.log2(min(self.xs)), math.log2(max(self.xs))
        return left + 30 + (math.log2(value) - lo) / ((hi - lo) or 1) * (right - left - 60)

    def y(self, value: float) -> float:
        _, top, _, bottom = self.box
        if self.log_y:
            lo, hi, value = math.log10(self.y_min), math.log10(self.y_max), math.log10(max(value, self.y_min))
        else:
            lo, hi = self.y_min, self.y_max
        return bottom - (value - lo) / ((hi - lo) or 1) * (bottom - top)

    def axes(self, title: str, y_label: str, y_ticks: list[float]) -> None:
        left, top, right, bottom = self.box
        d = self.draw
        d.rectangle(self.box, outline=(0, 0, 0))
        d.text(((left + right) / 2, top - 28), title, fill=(0, 0, 0), font=_font(17), anchor="mm")
        for tick in y_ticks:
            y = self.y(tick)
            d.line([(left, y), (right, y)], fill=(225, 225, 225))
            d.text((left - 6, y), f"{tick:g}", fill=(0, 0, 0), font=self.font, anchor="rm")
        for value in self.xs:
            x = self.x(value)
            d.line([(x, top), (x, bottom)], fill=(235, 235, 235))
            d.text((x, bottom + 6), str(value), fill=(0, 0, 0), font=self.font, anchor="ma")
        d.text(((left + right) / 2, bottom + 26), "concurrent connections", fill=(0, 0, 0), font=self.font, anchor="ma")
        d.text((left - 60, top - 10), y_label, fill=(0, 0, 0), font=self.font, anchor="ls")

    def series(self, points: list[tuple[int, float]], color: tuple[int, int, int]) -> None:
        xy = [(self.x(x), self.y(y)) for x, y in points]
        if len(xy) > 1:
            self.draw.line(xy, fill=color, width=3)
        for x, y in xy:
            self.draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=color)


def _nice_ticks(top: float, count: int = 5) -> list[float]:
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(top / step) + 1)]


def plot(results: dict[str, Any], path: Path) -> None:
    """Throughput and p99 latency against concurrency for each server (scenario a), limit as a dashed line."""
    series: dict[str, list[tuple[int, float, float]]] = {}
    for m in results["measurements"]:
        if m["scenario"] == "a" and m["server"] in COLORS:  # the three compared servers
            series.setdefault(m["server"], []).append((m["connections"], m["images_per_s"], m["latency_ms"]["p99"]))
    if not series:
        return
    xs = sorted({c for points in series.values() for c, _, _ in points})
    if len(xs) == 1:
        xs = [xs[0], xs[0] * 2]
    limit = results["limit"]["best"]["images_per_s"]
    image = Image.new("RGB", (1300, 560), "white")
    draw = ImageDraw.Draw(image)

    left = _Panel(draw, (100, 70, 600, 460), xs)
    top = max([limit] + [t for points in series.values() for _, t, _ in points]) * 1.1
    left.y_min, left.y_max = 0.0, top
    left.axes("Throughput (scenario a: 1 image/request)", "images/s", _nice_ticks(top))
    y = left.y(limit)
    for x0 in range(left.box[0], left.box[2], 14):
        draw.line([(x0, y), (min(x0 + 8, left.box[2]), y)], fill=(90, 90, 90), width=2)
    draw.text((left.box[0] + 6, y - 4), f"in-process limit {limit:,.0f} img/s", fill=(60, 60, 60), font=left.font,
              anchor="ld")  # fmt: skip

    right = _Panel(draw, (760, 70, 1260, 460), xs)
    p99s = [p for points in series.values() for _, _, p in points]
    right.log_y = True
    right.y_min = 10 ** math.floor(math.log10(max(min(p99s), 0.1)))
    right.y_max = 10 ** math.ceil(math.log10(max(p99s) * 1.05))
    decades = range(round(math.log10(right.y_min)), round(math.log10(right.y_max)) + 1)
    right.axes("p99 latency (scenario a)", "ms (log scale)", [10**e for e in decades])

    for index, (server, points) in enumerate(sorted(series.items())):
        points.sort()
        color = COLORS.get(server, (0, 0, 0))
        left.series([(c, t) for c, t, _ in points], color)
        right.series([(c, p) for c, _, p in points], color)
        lx = 80 + index * 300
        draw.line([(lx, 525), (lx + 30, 525)], fill=color, width=4)
        draw.text((lx + 38, 525), SERVER_LABELS.get(server, server), fill=(0, 0, 0), font=_font(15), anchor="lm")
    image.save(path, format="PNG")


# -- files ---------------------------------------------------------------------------------------------
def write_all(results: dict[str, Any], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, directory / "throughput.png")
    (directory / "RESULTS.md").write_text(results_markdown(results, "throughput.png"))
