"""The tables `attnviz eval` prints: localisation beside its baselines, gate ablation, deletion/insertion curves,
channel probes beside the input-feature probe, and the one-line-per-block summary of `eval all`."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from attnviz.cli.common import LayerPath, err, out


def fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def signed(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.2f}"


def random_caption(result: dict[str, Any]) -> str:
    random, centre = result["random"], result.get("centre") or {}
    text = f"a uniform random map scores point {fmt(random['pointing'])}, AUROC {fmt(random['auroc'])}"
    if centre:
        text += f"; a centre prior {fmt(centre['pointing'])}, {fmt(centre['auroc'])}"
    return text + " (same scenes)"


def _best_cam(result: dict[str, Any], best: dict[str, Any]) -> dict[str, Any]:
    cam = best.get("gradcam")
    return cam if cam else result["gradcam"].get(str(best.get("stage")), {})


def print_summary(results: list[dict[str, Any]], n: int) -> None:
    table = Table(
        title=f"Demo weights on {n} held-out scenes: where each block localises best",
        caption=random_caption(results[0]) if results else None,
    )
    table.add_column("block", no_wrap=True)
    table.add_column("acc", justify="right", no_wrap=True)
    table.add_column("best map", min_width=16, overflow="fold")  # folds, so the table fits 80 columns
    for column in ("point", "CAM", "AUROC", "CAM"):
        table.add_column(column, justify="right", no_wrap=True)
    for r in results:
        best = r["best"] or {}
        cam = _best_cam(r, best) if best else {}
        table.add_row(
            r["block"],
            fmt(r["accuracy"]),
            LayerPath(best["map"]) if best else "-",
            fmt(best.get("pointing")),
            fmt(cam.get("pointing")),
            fmt(best.get("auroc")),
            fmt(cam.get("auroc")),
        )
    out.print(table)
    if any(r.get("ablation") for r in results):
        _use_summary(results)


def _use_summary(results: list[dict[str, Any]]) -> None:
    table = Table(
        title="Does the network use it? Δp: drop of the true class's probability",
        caption="gate=1 / shuffled: every gate of the block replaced; del / ins: deletion / insertion AUC in the "
        "order of the best map and of Grad-CAM at its stage",
    )
    table.add_column("block", no_wrap=True)
    for column in ("Δp gate=1", "shuffled", "del", "CAM", "ins", "CAM"):
        table.add_column(column, justify="right", no_wrap=True)
    for r in results:
        together = (r.get("ablation") or {}).get("all", {})
        attention, cam = _curve_pair(r)
        table.add_row(
            r["block"],
            signed(together.get("one", {}).get("prob_drop")),
            signed(together.get("shuffle", {}).get("prob_drop")),
            fmt(attention.get("deletion")),
            fmt(cam.get("deletion")),
            fmt(attention.get("insertion")),
            fmt(cam.get("insertion")),
        )
    out.print(table)


def _curve_pair(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The curves of the best map and of Grad-CAM at its stage ({} where there are none)."""
    sources = (result.get("curves") or {}).get("sources", {})
    best = result.get("best") or {}
    return sources.get(f"attention {best.get('map')}", {}), sources.get(f"gradcam stage {best.get('stage')}", {})


def print_tables(block: str, result: dict[str, Any]) -> None:
    out.print(f"[bold]{block}[/]: accuracy {result['accuracy']:.3f} on {result['images']} held-out scenes")
    if result["maps"]:
        _localisation(result)
    if result.get("external"):
        _external(result)
    if result.get("best") and "scored_on" in result["best"]:
        _best_line(result)
    if result.get("ablation"):
        _ablation(result["ablation"])
    if result.get("curves"):
        _curves(result["curves"])
    if result["channel"]:
        _channel(result)
    protocols = result.get("protocols") or {}
    tolerance = protocols.get("pointing", {}).get("tolerance_px")
    standard = protocols.get("pointing_std", {}).get("tolerance_px")
    err.print(
        f"[dim]point: pointing game, a maximal pixel of the map lies on the object (mask dilated by {tolerance} px); "
        f"@15: the same with the standard 15 px at 224 ({standard} px here); ties: any maximal pixel counts; a "
        "constant map never hits; AUROC: map values as a pixel-level object score; EPG: energy-based pointing "
        f"game, the map's mass on the object; maps upsampled {protocols.get('upsample')}; empty masks left out[/]"
        if protocols
        else "[dim]point: pointing game; AUROC: map values as a pixel-level object score[/]"
    )


def _localisation(result: dict[str, Any]) -> None:
    table = Table(title="Does the attention land on the object? (pixel level)", caption=random_caption(result))
    table.add_column("map", min_width=20, overflow="fold")  # folds, so the table fits 80 columns
    for column in ("stage", "point", "@15", "AUROC", "EPG"):
        table.add_column(column, justify="right", no_wrap=True)

    def row(name: object, stage: object, scores: dict[str, Any]) -> None:
        table.add_row(
            name,
            str(stage),
            fmt(scores.get("pointing")),
            fmt(scores.get("pointing_std")),
            fmt(scores.get("auroc")),
            fmt(scores.get("energy_pointing")),
        )

    for name, scores in sorted(result["maps"].items(), key=lambda kv: (kv[1]["stage"] or 0, kv[0])):
        row(LayerPath(name), scores["stage"], scores)
    method = result.get("cam_method") or "CAM"
    for stage, scores in sorted(result["gradcam"].items()):
        row(f"{method} (baseline)", stage, scores)
    if result.get("centre"):
        row("centre prior (baseline)", "-", result["centre"])
    row("random (baseline)", "-", result["random"])
    out.print(table)


def _external(result: dict[str, Any]) -> None:
    table = Table(title="Maps from another tool (--maps), same scenes and protocols")
    for column in ("map", "point", "@15", "AUROC", "EPG"):
        table.add_column(column, justify="left" if column == "map" else "right", overflow="fold")
    for name, scores in result["external"].items():
        table.add_row(
            name,
            fmt(scores["pointing"]),
            fmt(scores["pointing_std"]),
            fmt(scores["auroc"]),
            fmt(scores["energy_pointing"]),
        )
    out.print(table)


def _best_line(result: dict[str, Any]) -> None:
    best = result["best"]
    cam = _best_cam(result, best)
    first, last = best["scored_on"]
    out.print(
        f"best map {best['map']} (chosen on scenes 0-{first - 1}, scored on {first}-{last - 1}): point "
        f"{fmt(best['pointing'])}, AUROC {fmt(best['auroc'])}; Grad-CAM at stage {best['stage']} "
        f"{fmt(cam.get('pointing'))}, {fmt(cam.get('auroc'))}; centre {fmt(best['centre']['pointing'])}, "
        f"{fmt(best['centre']['auroc'])}; random {fmt(best['random']['pointing'])}, {fmt(best['random']['auroc'])}"
    )


def _ablation(ablation: dict[str, Any]) -> None:
    modes = ablation["modes"]
    table = Table(
        title=f"Gate ablation on {ablation['scenes']} scenes: drop of the true class's probability",
        caption=f"unablated: probability {ablation['probability']:.3f}, accuracy {ablation['accuracy']:.3f}; "
        "acc: largest accuracy drop",
    )
    table.add_column("layer", min_width=14, overflow="fold")
    for mode in modes:
        table.add_column({"one": "gate=1", "mean": "mean", "shuffle": "shuffled"}.get(mode, mode), justify="right")
    table.add_column("acc", justify="right")
    rows = [*ablation["layers"].items(), ("all layers", ablation["all"])]
    for layer, drops in rows:
        worst = max(drops[mode]["acc_drop"] for mode in modes) if modes else None
        table.add_row(LayerPath(layer), *(signed(drops[mode]["prob_drop"]) for mode in modes), signed(worst))
    out.print(table)


def _curves(curves: dict[str, Any]) -> None:
    table = Table(
        title=f"Deletion / insertion on {curves['scenes']} scenes, {curves['steps']} steps "
        "(true class's probability, area under the curve)",
        caption="deletion: lower = the map finds what the network uses; insertion: higher",
    )
    table.add_column("pixels in the order of", min_width=20, overflow="fold")
    table.add_column("deletion", justify="right")
    table.add_column("insertion", justify="right")
    for name, scores in curves["sources"].items():
        table.add_row(LayerPath(name), fmt(scores["deletion"]), fmt(scores["insertion"]))
    out.print(table)


def _channel(result: dict[str, Any]) -> None:
    table = Table(
        title="How class-specific are the channel weights? (linear probe on half, tested on half)",
        caption="input: the same probe on the block's input features, average-pooled",
    )
    for column in ("map", "stage", "probe", "input", "chance"):
        table.add_column(column, justify="left" if column == "map" else "right", overflow="fold")
    for name, scores in result["channel"].items():
        table.add_row(
            LayerPath(name),
            str(scores["stage"]),
            fmt(scores["probe_accuracy"]),
            fmt(scores.get("input_probe_accuracy")),
            fmt(scores["chance"]),
        )
    out.print(table)
