"""Steered-inference benchmark: ``python -m bench.inference [--requests N] [--tokens N]``.

Prints one table: TTFT p50/p95 and decode tokens/s for the default model, unsteered vs steered
(one vector at one layer; one vector on every steerable layer), cold vs warm KV prefix
(a 256-token document the co-writer resends with a different instruction), llama.cpp vs torch,
with ratios against the unsteered llama.cpp row of the same prefix state. Targets (issue 3):
steering overhead <= 2% on llama.cpp, warm-prefix TTFT p95 <= 200 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _document(engine, n_tokens: int) -> str:
    from inference import reference_texts

    text = " ".join(reference_texts() * 4)
    ids = engine.tokenize(text)[:n_tokens]
    return b"".join(engine.token_bytes(t) for t in ids).decode("utf-8", "ignore")


ASKS = ["Continue the text.", "Suggest a title.", "Rewrite the last sentence.", "What is next?",
        "Summarise it.", "Make it shorter.", "Add a detail.", "Fix the grammar."]


def one_request(engine, doc: str, spec, warm: bool, i: int, tokens: int):
    from inference import GenerationRequest, SamplingParams

    body = doc if warm else f"[draft {time.perf_counter_ns()}] " + doc  # a new first token: no reuse
    req = GenerationRequest(messages=[{"role": "user", "content": f"{body}\n\n{ASKS[i % len(ASKS)]}"}],
                            params=SamplingParams(max_tokens=tokens), steering=spec)
    last = None
    for ev in engine.stream(req):
        last = ev
    return last.usage


def run_cases(cases, doc: str, warm: bool, requests: int, tokens: int) -> list[dict]:
    """Round-robin over the cases, one request each per round, so background load on the machine
    hits every case alike; round 0 warms the pool (and builds vectors) and is not counted."""
    from inference import SteeringSpec

    specs = [SteeringSpec.from_json(c[3]) for c in cases]
    samples: list[list] = [[] for _ in cases]
    for i in range(requests + 1):
        for j, (backend, engine, _, _) in enumerate(cases):
            if backend != "llama.cpp" and i > max(3, requests // 4):
                continue  # torch is ~5x slower on CPU: fewer samples
            u = one_request(engine, doc, specs[j], warm, i, tokens)
            if i:
                samples[j].append(u)
        print(".", end="", file=sys.stderr, flush=True)
    out = []
    for us in samples:
        ttft = [u.time_to_first_token_ms for u in us]
        out.append({"ttft_p50": _pct(ttft, 0.5), "ttft_p95": _pct(ttft, 0.95),
                    "tps": statistics.median(u.tokens_per_second for u in us),
                    "cached": statistics.mean(u.cached_tokens / max(1, u.prompt_tokens) for u in us),
                    "prompt": us[-1].prompt_tokens, "n": len(us)})
    return out


def vllm_batch(inf, requests: int, tokens: int) -> None:
    """32 requests in one continuous batch: all unsteered vs 32 distinct steering configs."""
    from concurrent.futures import ThreadPoolExecutor

    from inference import GenerationRequest, SamplingParams, SteeringSpec

    engine = inf.engine(f"{inf.base_name}@vllm").load()
    prompts = [f"Write a short note about topic number {i}." for i in range(requests)]

    def run(steer: bool) -> tuple[float, int]:
        reqs = [GenerationRequest(
            messages=[{"role": "user", "content": p}],
            params=SamplingParams(max_tokens=tokens),
            steering=SteeringSpec.from_json([{"source": "caa:formal", "strength": -0.3 + 0.6 * i / requests,
                                              "layers": [6 + i % 12]}] if steer else None))
            for i, p in enumerate(prompts)]
        engine.generate(reqs[0])  # warm
        t0 = time.perf_counter()
        with ThreadPoolExecutor(requests) as pool:
            done = list(pool.map(engine.generate, reqs))
        return time.perf_counter() - t0, sum(c.usage.completion_tokens for c in done)

    base_s, base_n = run(False)
    steer_s, steer_n = run(True)
    base_tps, steer_tps = base_n / base_s, steer_n / steer_s
    print(f"\nvLLM, {requests} requests x {tokens} tokens in one continuous batch")
    print(f"{'batch':<34} {'wall s':>7} {'tokens':>7} {'tok/s':>8} {'ratio':>6}")
    print(f"{'unsteered':<34} {base_s:>7.2f} {base_n:>7} {base_tps:>8.1f} {1:>6.3f}")
    print(f"{f'{requests} distinct steering configs':<34} {steer_s:>7.2f} {steer_n:>7} {steer_tps:>8.1f} "
          f"{steer_tps / base_tps:>6.3f}")
    print("target on a GPU: steered >= 0.70 of unsteered throughput")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=12, help="measured requests per row")
    ap.add_argument("--tokens", type=int, default=32, help="generated tokens per request")
    ap.add_argument("--doc-tokens", type=int, default=256)
    ap.add_argument("--no-torch", action="store_true", help="skip the torch rows (slow on CPU)")
    ap.add_argument("--vllm", action="store_true", help="also run the vLLM batch (needs vllm)")
    ap.add_argument("--vllm-only", action="store_true", help="only the vLLM batch")
    ap.add_argument("--batch", type=int, default=32, help="requests in the vLLM batch")
    args, _ = ap.parse_known_args(sys.argv[1:] if argv is None else argv)  # tolerate other benches' flags

    os.environ.setdefault("TINYMORPH_DATA_DIR", tempfile.mkdtemp(prefix="tinymorph-bench-"))
    from inference import Inference, InferenceConfig

    inf = Inference(InferenceConfig.from_env())
    if args.vllm_only:
        vllm_batch(inf, args.batch, args.tokens)
        return
    llama = inf.engine()
    doc = _document(llama.load(), args.doc_tokens)
    n_layers = llama.info.n_layers
    one = [{"source": "caa:formal", "strength": 0.3}]
    many = [{"source": "caa:formal", "strength": 0.05, "layers": list(range(1, n_layers))}]
    rows = []
    print(f"model {inf.base_name}, {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at start: "
          f"other work on the machine slows every row), {args.doc_tokens}-token document, "
          f"{args.tokens} tokens x {args.requests} requests per row", flush=True)
    cases = [("llama.cpp", llama, "none", None), ("llama.cpp", llama, "1 vector, 1 layer", one),
             ("llama.cpp", llama, f"1 vector, {n_layers - 1} layers", many)]
    if not args.no_torch:
        torch_engine = inf.torch_engine()
        cases += [("torch", torch_engine, "none", None), ("torch", torch_engine, "1 vector, 1 layer", one)]
    # llama.cpp and torch rows run in separate phases: torch's OpenMP threads keep spinning for a
    # while after each call and would steal the cores from llama.cpp if the two were interleaved.
    groups = [[c for c in cases if c[0] == "llama.cpp"], [c for c in cases if c[0] != "llama.cpp"]]
    for warm in (False, True):
        for group in filter(None, groups):
            for (backend, _, label, _), r in zip(group, run_cases(group, doc, warm, args.requests, args.tokens)):
                rows.append((backend, label, "warm" if warm else "cold", r))
    rows.sort(key=lambda row: (row[2] == "warm", row[0] != "llama.cpp"))
    print(file=sys.stderr)

    base = {prefix: r for b, label, prefix, r in rows if b == "llama.cpp" and label == "none"}
    head = (f"{'backend':<10} {'steering':<22} {'prefix':<6} {'n':>3} {'cached':>6} {'TTFT p50':>9} {'TTFT p95':>9} "
            f"{'tok/s':>7} {'tok/s ratio':>11} {'TTFT ratio':>10}")
    print(head)
    print("-" * len(head))
    for backend, label, prefix, r in rows:
        b = base[prefix]
        print(f"{backend:<10} {label:<22} {prefix:<6} {r['n']:>3} {r['cached']:>6.0%} {r['ttft_p50']:>7.1f}ms "
              f"{r['ttft_p95']:>7.1f}ms {r['tps']:>7.1f} {r['tps'] / b['tps']:>11.3f} "
              f"{r['ttft_p50'] / b['ttft_p50']:>10.3f}")
    print()
    for prefix in ("cold", "warm"):
        loss = max(1 - r["tps"] / base[prefix]["tps"] for b, label, p, r in rows
                   if b == "llama.cpp" and label != "none" and p == prefix)
        print(f"llama.cpp steering overhead, {prefix} prefix (worst decode tok/s loss): {loss:+.1%}"
              "  (target <= 2%)")
    warm_p95 = max(r["ttft_p95"] for b, _, p, r in rows if b == "llama.cpp" and p == "warm")
    print(f"llama.cpp warm-prefix TTFT p95 (worst row): {warm_p95:.1f} ms  (target <= 200 ms)")
    steered = [r for b, label, p, r in rows if b == "llama.cpp"]
    print(f"prompt: {steered[0]['prompt']} tokens (chat template + document + instruction); "
          f"load average at end {os.getloadavg()[0]:.1f}")
    if args.vllm:
        vllm_batch(inf, args.batch, args.tokens)


if __name__ == "__main__":
    main()
