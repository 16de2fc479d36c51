"""The README tables, made from benchmarks/results/*.json (--quick: benchmarks/work/quick/).

    python benchmarks/tables.py                  # print them
    python benchmarks/tables.py --write-readme   # replace the block between the markers in benchmarks/README.md
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

START, END = "<!-- tables:start -->", "<!-- tables:end -->"


def _load(name: str, quick: bool):
    p = C.result_path(name, quick)
    if not os.path.isfile(p):
        return None
    with open(p) as f:
        return json.load(f)


def _where(r) -> str:
    m = r["machine"]
    v = r["versions"]
    return (f"*{r['date']}, {m['cpu']} ({m['cores']} cores{', GPU ' + ', '.join(m['gpus']) if m['gpus'] else ', no GPU'}), "
            f"load {m['load_avg_at_start'][0]} at start; paddlepaddle {v.get('paddlepaddle')}, "
            f"onnxruntime {v.get('onnxruntime')}; commit {v.get('ppyolo_slim_commit')}.*  \n"
            f"`{r['command']}`")


def render(quick: bool = False) -> str:
    import latency
    import peer
    import slimming
    import train_throughput
    parts = []
    sections = (("slimming", "Slimming trade-off", slimming.table),
                ("latency", "Latency: original against pruned", latency.table),
                ("peer", "Against ultralytics YOLOv5n (PyTorch)", peer.tables),
                ("train_throughput", "Training throughput and memory", train_throughput.table))
    for name, title, fn in sections:
        r = _load(name, quick)
        parts.append(f"### {title}\n")
        if r is None:
            parts.append(f"_Not run yet: `python benchmarks/{name}.py`._\n")
            continue
        if r.get("error"):
            parts.append(f"_Failed: {r['error']}_\n")
            continue
        parts.append(_where(r) + "\n")
        if name == "peer":
            ms = r["model_size"]
            parts.append(f"yolov5n (nc=80) built by the peer: {ms['peer']['params']:,} parameters, "
                         f"{ms['peer']['gflops_640'].get('thop_640', float('nan')):.2f} GFLOPs at 640 (thop), "
                         f"{ms['peer']['gflops_640'].get('torch_flop_counter_640', float('nan')):.2f} (torch FLOP "
                         f"counter); ours: {ms['ours']['params']:,} parameters, {ms['ours']['gflops_640']:.2f} GFLOPs.\n")
        if name == "latency" and r.get("weights", "").startswith("random"):
            parts.append(f"Weights: {r['weights']}; pruned at ratio {r['prune_ratio']} "
                         f"(round_to {r.get('round_to', 1)}; {r['models']['original']['params']:,} -> "
                         f"{r['models']['pruned']['params']:,} parameters).\n")
        parts.append(fn(r) + "\n")
        if name == "latency":   # variants written with --tag (e.g. another round_to)
            folder = os.path.dirname(C.result_path(name, quick))
            for f in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                if f.startswith("latency_") and f.endswith(".json"):
                    with open(os.path.join(folder, f)) as fh:
                        v = json.load(fh)
                    parts.append(f"Variant `{f}`: pruned with round_to {v.get('round_to')} "
                                 f"({v['models']['original']['params']:,} -> {v['models']['pruned']['params']:,} "
                                 f"parameters).  \n" + _where(v) + "\n")
                    parts.append(fn(v) + "\n")
        if name == "peer":   # variants written with --tag (e.g. our side on another Paddle)
            folder = os.path.dirname(C.result_path(name, quick))
            for f in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                if f.startswith("peer_") and f.endswith(".json"):
                    with open(os.path.join(folder, f)) as fh:
                        v = json.load(fh)
                    if v.get("error"):
                        parts.append(f"Variant `{f}`: _failed: {v['error']}_\n")
                        continue
                    parts.append(f"Variant `{f}`: our side on paddlepaddle {v['versions'].get('paddlepaddle')} "
                                 f"(peer: torch {v.get('peer_versions', {}).get('torch')}).  \n" + _where(v) + "\n")
                    parts.append(fn(v) + "\n")
        if name == "slimming" and r.get("plot"):
            parts.append(f"![mAP against FLOPs]({os.path.relpath(os.path.join(C.REPO, r['plot']), C.HERE)})\n")
    return "\n".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write-readme", action="store_true")
    a = ap.parse_args(argv)
    text = render(a.quick)
    if not a.write_readme:
        print(text)
        return 0
    path = os.path.join(C.HERE, "README.md")
    with open(path) as f:
        readme = f.read()
    if START not in readme or END not in readme:
        print(f"{path}: no {START} ... {END} block to replace", file=sys.stderr)
        return 1
    head, rest = readme.split(START, 1)
    tail = rest.split(END, 1)[1]
    from ppyolo_slim.utils.io import atomic_write_bytes
    atomic_write_bytes(path, (head + START + "\n" + text + "\n" + END + tail).encode())
    print(f"updated {os.path.relpath(path, C.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
