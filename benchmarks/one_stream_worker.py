"""One stream of `generate()` from the charrnn tree at --root (run as a script, in its own process).

Prints JSON: `cold` (chars/s of the first call, which loads what it needs) and `warm` (the best
of the later calls). `benchmarks/sample.py` runs it for today's tree and an older one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--length", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bfloat16", action="store_true", help="round the weights to bfloat16")
    args = parser.parse_args()
    sys.path.insert(0, args.root)
    import torch

    from charrnn.config import ModelConfig, SampleConfig
    from charrnn.generation.sampling import generate
    from charrnn.model.network import CharRNN
    from charrnn.text.corpus import Vocab

    torch.set_num_threads(1)
    vocab = Vocab(tuple(range(32, 97)))  # 65 symbols, as tiny shakespeare
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(cell="lstm", layers=2, hidden=args.hidden), vocab.size).eval()
    if args.bfloat16:  # the values `export --dtype bfloat16` leaves, in float32
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(parameter.to(torch.bfloat16).float())
    config = SampleConfig(length=args.length, num_samples=1, seed=0)
    speeds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        drawn = generate(model, vocab, "", config)
        if not isinstance(drawn, list):  # today's generate yields; older ones returned texts
            drawn = list(drawn)
        speeds.append(args.length / (time.perf_counter() - started))
    print(json.dumps({"cold": speeds[0], "warm": max(speeds[1:])}))


if __name__ == "__main__":
    main()
