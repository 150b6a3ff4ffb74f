"""Turn a bench run (the JSON written by bench.run) into a Markdown table, ratios and a plot."""

from pathlib import Path
from typing import Any

SATURATION = "saturation"  # the best throughput over all K


def _by_server(points: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    table: dict[str, dict[int, dict[str, Any]]] = {}
    for point in points:
        table.setdefault(point["server"], {})[point["concurrency"]] = point
    return table


def ratio_lines(run: dict[str, Any]) -> list[str]:
    """The issue's ratios: service/ceiling, service/baseline and service/each peer, per K."""
    lines = []
    for variant, data in run["variants"].items():
        ceiling = data["ceiling"]
        servers = _by_server(data["points"])
        ours = servers.get("service")
        if not ours:
            continue
        best = max(p["images_per_s"] for p in ours.values())
        lines.append(
            f"{variant}: service/ceiling at saturation = {best:.2f} / "
            f"{ceiling['images_per_s']:.2f} = {best / ceiling['images_per_s']:.2f}"
        )
        if 1 in ours:
            p50 = ours[1]["p50_ms"]
            model_b1 = ceiling["model_ms_by_batch"]
            model_b1 = model_b1.get(1, model_b1.get("1", 0.0))  # int keys become str in JSON
            lines.append(
                f"{variant}: K=1 p50 {p50:.1f} ms vs ceiling single-image "
                f"{ceiling['single_image_latency_ms']:.1f} ms "
                f"(+{p50 - ceiling['single_image_latency_ms']:.1f} ms); outside the model "
                f"{p50 - model_b1:.1f} ms"
            )
        lines.append(
            f"{variant}: service peak RSS {max(p['peak_rss_mb'] for p in ours.values()):.0f} MB"
        )
        overload = data.get("overload")
        if overload:
            for phase, title in (("four_x", "4x load"), ("flood", "flood")):
                result = overload[phase]
                offered = (
                    f"{overload['offered_per_s']:.1f} req/s offered"
                    if phase == "four_x"
                    else f"{result['clients']} closed-loop clients"
                )
                lines.append(
                    f"{variant}: {title} ({offered}): accepted {result['accepted_per_s']:.2f}/s, "
                    f"p99 {result['accepted_p99_ms']:.0f} ms (deadline "
                    f"{overload['deadline_ms']} ms), 503 p50/p99 {result['shed_p50_ms']:.1f}/"
                    f"{result['shed_p99_ms']:.1f} ms, answers {result['errors']}, peak RSS "
                    f"{result['peak_rss_mb']:.0f} MB, cores used: server "
                    f"{result['server_cores']:.2f}, load generator {result['generator_cores']:.2f}"
                )
            probe = overload["four_x"]["probe"]
            lines.append(
                f"{variant}: 4x load, one separate light client: 503 p50/p99 "
                f"{probe['shed_p50_ms']:.1f}/{probe['shed_p99_ms']:.1f} ms over {probe['shed']} "
                f"refusals ({probe['admitted']} admitted)"
            )
            lines.append(
                f"{variant}: ready again {overload['ready_after_ms']:.0f} ms after the flood"
            )
        for other, others in servers.items():
            if other == "service":
                continue
            ratios = []
            for k, point in sorted(ours.items()):
                if k in others and others[k]["images_per_s"] > 0:
                    ratios.append(f"K={k}: {point['images_per_s'] / others[k]['images_per_s']:.2f}")
            lines.append(f"{variant}: service/{other} throughput " + ", ".join(ratios))
    return lines


def markdown(run: dict[str, Any]) -> str:
    """One table per model: the ceiling's parts, then every server at every K."""
    machine = run["machine"]
    out = [
        f"Run {run['started']} on {machine['cpus']} CPUs ({machine['cpu']}), "
        f"{machine['memory_gb']} GB, Python {machine['python']}, onnxruntime "
        f"{machine['onnxruntime']}; {run['settings']['image']} "
        f"({run['settings']['jpeg_bytes']} bytes), {run['settings']['threads']} intra-op threads.",
        "",
    ]
    for variant, data in run["variants"].items():
        c = data["ceiling"]
        by_batch = ", ".join(f"b{b}: {ms:.1f}" for b, ms in c["model_ms_by_batch"].items())
        out += [
            f"### Synthetic {variant}",
            "",
            f"Ceiling: model {c['model_ms_per_image']:.1f} ms/image at batch {c['best_batch']} "
            f"({by_batch}), decode + letterbox {c['prepare_ms']:.1f} ms, post-process "
            f"{c['postprocess_ms']:.2f} ms -> **{c['images_per_s']:.2f} images/s**; "
            f"single-image latency {c['single_image_latency_ms']:.1f} ms.",
            "",
            "| server | K | images/s | p50 ms | p95 ms | p99 ms | errors | peak RSS MB "
            "| mean batch |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
        ]
        for server, points in _by_server(data["points"]).items():
            for k, p in sorted(points.items()):
                errors = ", ".join(f"{code}: {n}" for code, n in p["errors"].items()) or "0"
                out.append(
                    f"| {server} | {k} | {p['images_per_s']:.2f} | {p['p50_ms']:.0f} | "
                    f"{p['p95_ms']:.0f} | {p['p99_ms']:.0f} | {errors} | {p['peak_rss_mb']:.0f} "
                    f"| {_mean_batch(p)} |"
                )
        out.append("")
    ratios = ratio_lines(run)
    if ratios:
        out += ["Ratios:", "", *(f"- {line}" for line in ratios), ""]
    return "\n".join(out)


def _mean_batch(point: dict[str, Any]) -> str:
    mean = point.get("mean_batch")
    return "" if mean is None else f"{mean:.2f}"


def plot(run: dict[str, Any], path: Path) -> None:
    """Throughput and p99 latency against K, one line per server, one column per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(run["variants"])
    figure, axes = plt.subplots(2, len(variants), figsize=(6 * len(variants), 8), squeeze=False)
    for column, variant in enumerate(variants):
        data = run["variants"][variant]
        throughput, latency = axes[0][column], axes[1][column]
        for server, points in _by_server(data["points"]).items():
            ks = sorted(points)
            throughput.plot(ks, [points[k]["images_per_s"] for k in ks], marker="o", label=server)
            latency.plot(ks, [points[k]["p99_ms"] for k in ks], marker="o", label=server)
        throughput.axhline(data["ceiling"]["images_per_s"], color="gray", ls="--", label="ceiling")
        throughput.set_title(f"synthetic {variant}: throughput")
        throughput.set_ylabel("images/s")
        latency.set_title(f"synthetic {variant}: p99 latency")
        latency.set_ylabel("ms")
        latency.set_yscale("log")
        for ax in (throughput, latency):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients K")
            ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
