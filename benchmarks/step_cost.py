"""Fit the step-cost model's device constants on this machine, then check the plans it picks.

tunescout chooses, for every effective batch, the micro-batch plan its cost model finds fastest
(``tunescout/train/stepcost.py``). The model's FLOPs come from the model config; three numbers
come from the device: matmul throughput, a fixed overhead per layer and pass, and how much
dearer an attention FLOP is than a matmul FLOP under a mask. This script measures forward and
backward passes of random Llamas built from configs (no download) over micro-batches of many
shapes, fits those three numbers by least squares, and then, on effective batches of lengths
log-uniform in 20-1,000 tokens, times every candidate plan against its prediction: how far off
the prediction is, and whether the plan the model picks is the one that ran fastest.

Run: ``.venv/bin/python benchmarks/step_cost.py [--threads 2] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from typing import Any

import torch

from tunescout.data.packing import candidate_plans, collate_plan
from tunescout.data.tokenize import TokenizedSample
from tunescout.train.loss import accumulate_gradients
from tunescout.train.stepcost import DEVICE_COSTS, DeviceCost, StepCost

MODELS = {  # name: (hidden, layers, heads, kv heads, intermediate, vocabulary); seconds a pass on 2 cores
    "llama-h128-l4": (128, 4, 4, 2, 512, 8192),
    "llama-h256-l4": (256, 4, 4, 2, 1024, 8192),
    "llama-h384-l6": (384, 6, 6, 2, 1024, 8192),
}
SHAPES = [(r, w) for w in (32, 64, 128, 256, 512, 1024, 2048) for r in (1, 2, 4, 8, 16) if r * w <= 2048]
"""Micro-batches of r full rows of w tokens, up to the 2,048-token budget of a CPU run."""


def build(spec: tuple[int, ...], device: torch.device) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, kv, inter, vocab = spec
    config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, intermediate_size=inter, vocab_size=vocab,
                         max_position_embeddings=4096, attn_implementation="sdpa")
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device).train()


def sample(n: int, vocab: int, rng: random.Random) -> TokenizedSample:
    ids = [rng.randrange(3, vocab) for _ in range(n)]
    return TokenizedSample(input_ids=tuple(ids), labels=tuple(ids))


def time_plan(model: torch.nn.Module, samples: list[TokenizedSample], plan: list, device: torch.device,
              repeats: int) -> float:
    """Fastest of ``repeats`` forward+backward passes over a plan (gradients zeroed between)."""
    batches = collate_plan(samples, plan)
    loss_tokens = sum(mb.num_loss_tokens for mb in batches)
    best = math.inf
    for _ in range(repeats + 1):  # the first pass warms up
        t0 = time.perf_counter()
        accumulate_gradients(model, batches, loss_tokens, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    return best


def fit(rows: list[tuple[float, float, float, float]]) -> DeviceCost:
    """Least squares of seconds = a * layers + b * matmul FLOPs + c * attention FLOPs (relative error)."""
    x = torch.tensor([[la / t, m / t, p / t] for la, m, p, t in rows], dtype=torch.float64)
    y = torch.ones(len(rows), 1, dtype=torch.float64)  # divided through by t: minimises relative error
    a, b, c = torch.linalg.lstsq(x, y).solution.flatten().tolist()
    return DeviceCost(throughput=1.0 / b, layer_overhead_s=max(a, 0.0), masked_penalty=c / b, varlen_penalty=c / b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4, help="held-out effective batches per model")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = random.Random(0)
    print(f"device {args.device}, {args.threads} threads, torch {torch.__version__}")

    rows, costs = [], {}
    for name, spec in MODELS.items():
        model = build(spec, device)
        cost = StepCost.for_model(model, device, "masked")
        costs[name] = (model, cost)
        for r, w in SHAPES:
            # One micro-batch of r full rows of w tokens, each row two packed samples: the
            # block-diagonal mask, as every packed plan runs it.
            samples = [sample(w // 2 + (w % 2) * (k % 2), spec[5], rng) for k in range(2 * r)]
            plan = [[[2 * i, 2 * i + 1] for i in range(r)]]
            seconds = time_plan(model, samples, plan, device, args.repeats)
            matmul = cost.token_flops * r * w + cost.head_flops * r * w
            rows.append((cost.layers, matmul, cost.pair_flops * r * w * w, seconds))
    fitted = fit(rows)
    table = DEVICE_COSTS[args.device]
    print(f"fitted on {len(rows)} passes: throughput {fitted.throughput:.3g} FLOP/s, overhead "
          f"{fitted.layer_overhead_s * 1e3:.3f} ms per layer and pass, masked attention x{fitted.masked_penalty:.2f}")
    print(f"table ({args.device}):       throughput {table.throughput:.3g} FLOP/s, overhead "
          f"{table.layer_overhead_s * 1e3:.3f} ms per layer and pass, masked attention x{table.masked_penalty:.2f}")
    errors = [abs(fitted.layer_overhead_s * la + (m + fitted.masked_penalty * p) / fitted.throughput - t) / t
              for la, m, p, t in rows]
    print(f"fit error on its own passes: median {sorted(errors)[len(errors) // 2]:.1%}, max {max(errors):.1%}")

    print("\nheld out: effective batches of 16 samples, lengths log-uniform 20-1000, max_length 2048, budget 2048")
    print(f"{'model':15s} {'batch':>5s} {'picked':16s} {'fastest':16s} {'pick/fastest':>12s} {'pred err':>9s}")
    ratios, pred_errors, hits, table_hits = [], [], 0, 0
    for name, (model, table_cost) in costs.items():
        cost = StepCost(table_cost.token_flops, table_cost.head_flops, table_cost.pair_flops, table_cost.layers,
                        "masked", fitted)
        for b in range(args.batches):
            lengths = [int(math.exp(rng.uniform(math.log(20), math.log(1000)))) for _ in range(16)]
            samples = [sample(n, MODELS[name][5], rng) for n in lengths]
            plans = candidate_plans(lengths, 2048, 2048, cost=cost.group)  # rows grouped as the chooser does
            measured = {k: time_plan(model, samples, p, device, args.repeats) for k, p in plans.items()}
            predicted = {k: cost.plan(p, lengths, sum(lengths)) for k, p in plans.items()}
            picked, fastest = min(predicted, key=predicted.get), min(measured, key=measured.get)
            table_pick = min(plans, key=lambda k: table_cost.plan(plans[k], lengths, sum(lengths)))
            table_hits += table_pick == fastest
            hits += picked == fastest
            ratios.append(measured[picked] / measured[fastest])
            pred_errors += [abs(predicted[k] - measured[k]) / measured[k] for k in plans]
            print(f"{name:15s} {b:5d} {picked:16s} {fastest:16s} {ratios[-1]:12.2f} "
                  f"{sum(abs(predicted[k] - measured[k]) / measured[k] for k in plans) / len(plans):9.1%}")
    print(f"\nwith the fitted constants, the pick was the fastest plan in {hits}/{len(ratios)} batches; its time over the fastest's: "
          f"mean {sum(ratios) / len(ratios):.3f}, worst {max(ratios):.3f}; prediction error median "
          f"{sorted(pred_errors)[len(pred_errors) // 2]:.1%}; the table's constants picked the fastest in "
          f"{table_hits}/{len(ratios)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
