"""Build the shipped demo weights and their MANIFEST.json.

    python weights/build.py base            # the shared resnet18 backbone, trained on scenes
    python weights/build.py blocks cbam se  # blocks, head and batch norms on the base, one file per block
    python weights/build.py base --backbone mobilenet_v2    # the same for another backbone
    python weights/build.py det             # the ASFF detector det.pt, its backbone started from the base
    python weights/build.py sequence        # the additive and temporal_gate sequence models (attnviz.sequence)
    python weights/build.py manifest        # sha256, metrics and commands of every file into MANIFEST.json
    python weights/build.py table           # the README's eval tables, from MANIFEST.json

Every file is made by an `attnviz fit` (or `fit-det`) command, recorded in its .json sidecar (in det.pt itself) and
in MANIFEST.json, then scored with `attnviz eval` (`eval-det`); a file whose sha256 did not change keeps its scores.
Training runs in a work folder (checkpoints, resumable) and the final fp16 file is copied here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = Path.home() / "attnviz-train"
BASE = "resnet18_scenes.safetensors"
SIZE, BATCH = 96, 64
BASE_RUNS = {
    "resnet18": ["--epochs", "60", "--train-size", "6000", "--val-size", "1000", "--lr", "2e-3"],
    # Not shipped: on 2 CPU cores this run was at 0.22 validation accuracy after 15 of its 30 epochs (resnet18 was at
    # 0.76 after as many images) and was stopped; a mobilenet_v2 base needs a much longer run, e.g. on a GPU.
    "mobilenet_v2": ["--epochs", "30", "--train-size", "4000", "--val-size", "1000", "--lr", "2e-3"],
}
BLOCK_RUN = ["--train-size", "2000", "--val-size", "1000"]
BLOCK_EPOCHS = {"coord": 8}  # after 3 epochs coord was at 92% accuracy and pointing 0.71, still improving
DEFAULT_EPOCHS = 3
# Blocks that transform the features (SK's extra convs, ShuffleAttention's channel shuffle, S2-MLP's shifts and MLP,
# CoT's static context) stay at chance on the frozen base (10-12% after 3 epochs), and so did SK with the whole
# network training from the base (its blocks in every stage wreck the base, which then has to be relearned). These
# go into stages 1-3, whose convs retrain with each stage's output pulled towards the base's (`--train-stages`, the
# `StageMatcher` loss), so the frozen layer4 and head still understand them; their parts then hold layers 1-3 too.
RETRAIN = {"sk", "shuffle", "s2mlp", "cot"}
RETRAIN_RUN = ["--stages", "1,2,3", "--train-stages", "1,2,3", "--lr", "2e-3"]
RETRAIN_EPOCHS = {"shuffle": 14}  # 6 epochs left shuffle (whose shuffle scrambles every stage) at 0.894, still rising
# GAM's 7x7 convs at C=512 make its stage-4 blocks 25 MB (35 MB for all four stages); SOCA's covariance at C=512 is
# the slowest part on a CPU. Both go into stages 1-3, where the maps localise anyway.
# Self-attention over all pixels goes where there are few of them (stages 3-4), as the drawing commands default to.
BLOCK_STAGES = {"gam": "1,2,3", "soca": "1,2,3", "danet": "3,4", "mhsa": "3,4", "eca_mhsa": "3,4"}
DET = "det.pt"
# The shipped det.pt ran its first 9 epochs with "--epochs 18" and was then resumed with "--epochs 13" (the rest
# of the one-cycle schedule compressed) to fit the CPU time of the session; this list is the run as resumed.
DET_RUN = ["--size", "192", "--epochs", "13", "--train-size", "3000", "--val-size", "200", "--batch-size", "16",
           "--lr", "2e-3", "--workers", "1"]
EVAL_N = 300
DET_EVAL_N = 200
SEQUENCE = {"additive": "additive_seq.safetensors", "temporal_gate": "temporal_gate_seq.safetensors"}
SEQUENCE_EVAL_N = 500


def attnviz(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "attnviz", *args]
    print("$", " ".join(command[2:]), flush=True)
    return subprocess.run(command, check=True, text=True, stdout=subprocess.PIPE)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def base_name(backbone: str) -> str:
    return f"{backbone}_scenes.safetensors"


def build_base(backbone: str) -> None:
    WORK.mkdir(exist_ok=True)
    target = WORK / base_name(backbone)
    resume = ["--resume"] if target.with_suffix(".ckpt").exists() else []
    attnviz("fit", "none", "--backbone", backbone, "--out", str(target), "--size", str(SIZE), "--batch-size",
            str(BATCH), "--half", "--device", "cpu", *BASE_RUNS[backbone], *resume)
    _ship(target)


def build_block(block: str, backbone: str) -> None:
    target = WORK / f"{block}_{backbone}.safetensors"
    run = [*RETRAIN_RUN, "--epochs", str(RETRAIN_EPOCHS.get(block, 6))] if block in RETRAIN else [
        "--epochs", str(BLOCK_EPOCHS.get(block, DEFAULT_EPOCHS)), "--stages", BLOCK_STAGES.get(block, "1,2,3,4"),
        "--lr", "3e-3"]
    unfinished = target.with_suffix(".ckpt").exists() and not target.exists()  # a finished run wrote its weights
    resume = ["--resume"] if unfinished else []
    attnviz("fit", block, "--backbone", backbone, "--out", str(target), "--base", str(HERE / base_name(backbone)),
            "--size", str(SIZE),
            "--batch-size", str(BATCH), "--half", "--device", "cpu", *BLOCK_RUN, *run, *resume)
    _ship(target)


def build_det() -> None:
    target = WORK / DET
    resume = ["--resume"] if target.with_suffix(".ckpt").exists() else []
    attnviz("fit-det", "--out", str(target), "--backbone", "resnet18", "--base", str(HERE / BASE), "--half",
            "--device", "cpu", *DET_RUN, *resume)
    shutil.copyfile(target, HERE / DET)


def _ship(trained: Path) -> None:
    """Copy the weights and sidecar here; the sidecar's base points at a file beside it."""
    shutil.copyfile(trained, HERE / trained.name)
    sidecar = json.loads(trained.with_suffix(".json").read_text())
    if sidecar.get("base"):
        sidecar["base"] = Path(sidecar["base"]).name
    (HERE / trained.with_suffix(".json").name).write_text(json.dumps(sidecar, indent=2) + "\n")


def build_sequence(blocks: list[str]) -> None:
    """Train the sequence models (attnviz.sequence.train), score them with `attnviz eval`, and put their entries
    into MANIFEST.json, leaving every other entry as it is."""
    import torch

    from attnviz.sequence.train import fit

    torch.set_num_threads(1)  # these models are tiny: more threads only spin against each other on a busy CPU
    for block in blocks or list(SEQUENCE):
        target = HERE / SEQUENCE[block]
        print(f"training {block} -> {target}", flush=True)
        fit(block, target, command=f"python weights/build.py sequence {block}",
            on_progress=lambda step, loss: print(f"  step {step}  loss {loss:.4f}", flush=True))
        entry = _sequence_entry(target, {}, evaluate=True)
        manifest_path = HERE / "MANIFEST.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["files"] = [e for e in manifest["files"] if e["file"] != target.name] + [entry]
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


def _sequence_entry(path: Path, kept: dict, evaluate: bool) -> dict:
    sidecar = json.loads(path.with_suffix(".json").read_text())
    entry = {
        "file": path.name,
        "kind": "sequence",
        "block": sidecar["block"],
        "model": sidecar["model"],
        "data": f"attnviz.sequence procedural task: {sidecar['task']}",
        "command": sidecar["command"],
        "metrics": sidecar["metrics"],
        "sha256": sha256(path),
        "bytes": path.stat().st_size,
    }
    entry["eval"] = kept.get("eval") if kept.get("sha256") == entry["sha256"] else None
    if evaluate and entry["eval"] is None:
        command = ["eval", sidecar["block"], "--weights", str(path), "--n", str(SEQUENCE_EVAL_N), "--json"]
        result = json.loads(attnviz(*command).stdout)
        entry["eval"] = {"command": f"attnviz eval {sidecar['block']} --n {SEQUENCE_EVAL_N}", **result}
    return entry


def build_manifest(evaluate: bool) -> None:
    manifest_path = HERE / "MANIFEST.json"
    old = json.loads(manifest_path.read_text()).get("files", []) if manifest_path.exists() else []
    old = {e["file"]: e for e in old}
    entries = []
    for weights in sorted(HERE.glob("*.safetensors")):
        sidecar = json.loads(weights.with_suffix(".json").read_text())
        if sidecar.get("format") == "attnviz-sequence/1":
            entries.append(_sequence_entry(weights, old.get(weights.name, {}), evaluate))
            continue
        entry = {
            "file": weights.name,
            "kind": "backbone" if sidecar["block"] is None else "classifier",
            "block": sidecar["block"],
            "backbone": sidecar["backbone"],
            "base": sidecar["base"],
            "data": f"attnviz.data procedural scenes, {sidecar['input_size']} px, {len(sidecar['classes'])} classes",
            "command": sidecar.get("command", ""),
            "accuracy": sidecar["metrics"].get("val_accuracy"),
            "sha256": sha256(weights),
            "bytes": weights.stat().st_size,
        }
        kept = old.get(weights.name, {})
        entry["eval"] = kept.get("eval") if kept.get("sha256") == entry["sha256"] else None
        if evaluate and entry["kind"] == "classifier" and entry["eval"] is None:
            result = json.loads(attnviz("eval", sidecar["block"], "--weights", str(weights), "--n", str(EVAL_N),
                                        "--json").stdout)
            entry["eval"] = {
                "command": f"attnviz eval {sidecar['block']} --n {EVAL_N}",
                "accuracy": result["accuracy"], "best": result["best"], "gradcam": result["gradcam"],
                "random": result["random"], "maps": result["maps"], "channel": result["channel"],
            }
        entries.append(entry)
    if (HERE / DET).is_file():
        entries.append(_det_entry(HERE / DET, old.get(DET, {}), evaluate))
    manifest_path.write_text(json.dumps({"format": "attnviz-manifest/1", "files": entries}, indent=2) + "\n")
    print(f"wrote {manifest_path} ({len(entries)} files)")


def _det_entry(path: Path, kept: dict, evaluate: bool) -> dict:
    import torch

    contents = torch.load(path, map_location="cpu", weights_only=True)
    config, training = contents["config"], contents.get("training", {})
    entry = {
        "file": path.name,
        "kind": "detector",
        "block": "asff",
        "backbone": config["backbone"],
        "base": Path(training["base"]).name if training.get("base") else None,
        "data": f"attnviz.data detection scenes, {config['input_size']} px, {len(contents['classes'])} classes, "
        f"up to {training.get('max_objects')} objects from 8 px to half the image",
        "command": training.get("command", ""),
        "map50": contents["metrics"]["val_map50"],
        "sha256": sha256(path),
        "bytes": path.stat().st_size,
    }
    entry["eval"] = kept.get("eval") if kept.get("sha256") == entry["sha256"] else None
    entry["notes"] = kept.get("notes") if kept.get("sha256") == entry["sha256"] else None
    if evaluate and entry["eval"] is None:
        result = json.loads(attnviz("eval-det", str(path), "--n", str(DET_EVAL_N), "--json").stdout)
        entry["eval"] = {"command": f"attnviz eval-det weights/{path.name} --n {DET_EVAL_N}", **result}
    return entry


def print_tables() -> None:
    """Markdown tables of the MANIFEST's eval numbers for resnet18: the maps' best stage, then the channel probes;
    then one short table for the other backbones."""
    entries = json.loads((HERE / "MANIFEST.json").read_text())["files"]
    scored = [e for e in entries if e["kind"] == "classifier" and e.get("eval") and e["backbone"] == "resnet18"]
    print("| block | accuracy | best map | stage | pointing | Grad-CAM | random | AUROC | Grad-CAM | random |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for e in scored:
        ev, best = e["eval"], e["eval"]["best"]
        if not best:
            continue
        cam = ev["gradcam"].get(str(best["stage"]), {})
        row = [e["block"], f"{ev['accuracy']:.3f}", f"`{best['map']}`", str(best["stage"])]
        for key in ("pointing", "auroc"):
            row += [f"**{best[key]:.2f}**", f"{cam.get(key, float('nan')):.2f}", f"{ev['random'][key]:.2f}"]
        print("| " + " | ".join(row) + " |")
    print()
    print("| block | accuracy | channel weights | probe accuracy (best stage) | chance |")
    print("|---|---|---|---|---|")
    for e in scored:
        ev = e["eval"]
        if not ev["channel"]:
            continue
        name, top = max(ev["channel"].items(), key=lambda item: item[1]["probe_accuracy"])
        row = [e["block"], f"{ev['accuracy']:.3f}", f"`{name}`", f"{top['probe_accuracy']:.2f} (stage {top['stage']})",
               f"{top['chance']:.2f}"]
        print("| " + " | ".join(row) + " |")
    others = [e for e in entries if e["kind"] == "classifier" and e.get("eval") and e["backbone"] != "resnet18"]
    if others:
        print()
        print("| backbone | block | accuracy | best map | stage | pointing | random | AUROC | best channel probe |")
        print("|---|---|---|---|---|---|---|---|---|")
    for e in others:
        ev, best = e["eval"], e["eval"]["best"] or {}
        probe = max(ev["channel"].values(), key=lambda c: c["probe_accuracy"], default=None)
        row = [e["backbone"], e["block"], f"{ev['accuracy']:.3f}", f"`{best['map']}`" if best else "-",
               str(best.get("stage", "-")), f"{best['pointing']:.2f}" if best else "-", f"{ev['random']['pointing']:.2f}",
               f"{best['auroc']:.2f}" if best else "-",
               f"{probe['probe_accuracy']:.2f} (stage {probe['stage']})" if probe else "-"]
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["base", "blocks", "det", "sequence", "manifest", "table"])
    parser.add_argument("blocks", nargs="*")
    parser.add_argument("--no-eval", action="store_true", help="manifest: keep the eval numbers already there")
    parser.add_argument("--backbone", default="resnet18", choices=sorted(BASE_RUNS), help="base, blocks: which one")
    args = parser.parse_args()
    if args.what == "base":
        build_base(args.backbone)
    elif args.what == "table":
        print_tables()
    elif args.what == "det":
        build_det()
    elif args.what == "sequence":
        build_sequence(args.blocks)
    elif args.what == "blocks":
        for block in args.blocks:
            build_block(block, args.backbone)
    else:
        build_manifest(evaluate=not args.no_eval)


if __name__ == "__main__":
    main()
