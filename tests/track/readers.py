"""Read back what each tracker wrote, from its own store, with its own reading API:
``{"params", "history": {name: [(step, value)]}, "final": {name: value}, "status", "group"}``."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path


def read_mlflow(run_dir: Path) -> dict:
    from mlflow.tracking import MlflowClient

    state = json.loads((run_dir / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    run = client.get_run(state["run_id"])
    history = {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
               for key in run.data.metrics if not key.startswith("final/")}
    return {"params": dict(run.data.params), "history": history,
            "final": {k.removeprefix("final/"): v for k, v in run.data.metrics.items() if k.startswith("final/")},
            "status": run.data.tags["tunescout.status"], "backend_status": run.info.status,
            "group": client.get_experiment(run.info.experiment_id).name, "name": run.info.run_name}


def read_tensorboard(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    history = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]
               if not t.startswith(("final/", "hparam/"))}
    final = {t.removeprefix("final/"): acc.Scalars(t)[-1].value for t in tags["scalars"] if t.startswith("final/")}

    def text(tag: str) -> str:
        return acc.Tensors(f"{tag}/text_summary")[-1].tensor_proto.string_val[0].decode()

    config = json.loads(text("config").strip("`\n"))
    return {"params": config, "history": history, "final": final, "status": text("status"), "group": None,
            "name": run_dir.name}


def _wandb_records(path: Path) -> list[bytes]:
    """The records of a ``.wandb`` file: a 7-byte header, then LevelDB-log blocks of 32 KiB, each
    record a 7-byte header (crc, length, type: full/first/middle/last) and its bytes."""
    raw, block, pos, out, part = path.read_bytes(), 32768, 7, [], b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            out.append(data)
        elif kind == 2:
            part = data
        elif kind == 3:
            part += data
        elif kind == 4:
            out.append(part + data)
    return out


def _finished_records(path: Path, timeout: float = 20.0) -> list[bytes]:
    """The file's records once its run's exit record is there: W&B's service process writes the
    file and may still be flushing it when ``finish`` has returned."""
    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + timeout
    while True:
        records = _wandb_records(path)
        kinds = []
        for data in records:
            record = pb.Record()
            record.ParseFromString(data)
            kinds.append(record.WhichOneof("record_type"))
        if "exit" in kinds or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def read_wandb(run_dir: Path) -> dict:
    from wandb.proto import wandb_internal_pb2 as pb

    run_id = json.loads((run_dir / "trackers.json").read_text())["wandb"]["id"]
    # "-1": same second; by folder name, where "<id>" sorts before "<id>-1" (the full path would not)
    files = sorted(run_dir.glob(f"wandb/offline-run-*-{run_id}*/run-{run_id}.wandb"), key=lambda p: p.parent.name)
    assert files, f"no offline W&B run {run_id} under {run_dir}/wandb"
    params, history, summary, group, name = {}, {}, {}, None, None
    for path in files:  # a resumed run writes a second offline folder with the same id
        for data in _finished_records(path):
            record = pb.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                group, name = record.run.run_group, record.run.display_name
                point = record.run.branch_point
                if record.run.HasField("branch_point") and point.run == run_id and point.metric == "_step":
                    # a rewind: as the server does when the run is synced, drop the history after that step
                    history = {k: [(s, v) for s, v in h if s <= point.value] for k, h in history.items()}
                params.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
            elif kind == "history":
                items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
                for key, value in items.items():
                    if not key.startswith("_"):
                        history.setdefault(key, []).append((record.history.step.num, value))
            elif kind == "summary":
                summary.update({"/".join(u.nested_key) or u.key: json.loads(u.value_json)
                                for u in record.summary.update})
    return {"params": params, "history": {k: sorted(v) for k, v in history.items()},
            "final": {k.removeprefix("final/"): v for k, v in summary.items() if k.startswith("final/")},
            "status": summary.get("status"), "group": group, "name": name}


READERS = {"mlflow": read_mlflow, "tensorboard": read_tensorboard, "wandb": read_wandb}
