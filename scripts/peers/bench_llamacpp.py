#!/usr/bin/env python3
"""Peer for bench-generate: llama.cpp (llama-cpp-python) on the same GGUF with the same prompts,
2 threads (BENCH_THREADS). Prints TSV rows `llamacpp\tmetric\tvalue\tunit`.

    pip install llama-cpp-python
    python3 scripts/peers/bench_llamacpp.py [MODELS_DIR]
"""
import os
import resource
import sys
import time

from llama_cpp import Llama

models = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
    "TRIAGE_MODELS_DIR", os.path.expanduser("~/.cache/hotline-triage/models")
)
threads = int(os.environ.get("BENCH_THREADS", "2"))
DECODE_TOKENS = 64


def row(metric, value, unit):
    print(f"llamacpp\t{metric}\t{value:.2f}\t{unit}", flush=True)


t = time.time()
llm = Llama(
    model_path=f"{models}/gemma-3-270m/gemma-3-270m-q4_k_m.gguf",
    n_ctx=2048,
    n_threads=threads,
    n_threads_batch=threads,
    n_batch=512,
    verbose=False,
)
row("load_time", time.time() - t, "s")
row("threads", threads, "threads")

# The same text as bench-generate.
INSTRUCTION = "以下是12345政务服务热线对市民来信的答复存档。\n"
EXAMPLE = "### 来信\n小区门口的路灯坏了一个月，晚上很黑，老人孩子出行不便，希望尽快维修。\n### 答复\n您好！您反映的问题已转交属地街道办事处，经现场核实，路灯线路老化，已于三日内更换完毕。感谢您的监督。\n"
COMPLAINTS = ["公交车不按站停车，司机态度差。", "学校违规收取补课费。"]
prompts = [f"{INSTRUCTION}{EXAMPLE * 12}### 来信\n{q}\n### 答复\n" for q in COMPLAINTS]
tokens = [llm.tokenize(p.encode("utf-8"), add_bos=True, special=False) for p in prompts]
row("prompt_tokens", len(tokens[0]), "tokens")

# Cold: the prompt (timed alone for prompt tokens/s), then greedy decoding.
t = time.time()
llm.eval(tokens[0])
prompt_time = time.time() - t
generated, first = 0, None
for _ in llm.generate([], temp=0.0, top_k=1, repeat_penalty=1.0, reset=False):
    generated += 1
    if first is None:
        first = time.time()
    if generated >= DECODE_TOKENS:
        break
end = time.time()
row("ttft_cold", (first - t) * 1e3, "ms")
row("prompt_tok_per_s", len(tokens[0]) / prompt_time, "tok/s")
row("decode_tok_per_s", (generated - 1) / (end - first), "tok/s")

# Warm: generate() keeps the longest common prefix of the previous tokens in its KV cache.
t = time.time()
for _ in llm.generate(tokens[1], temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
    break
row("ttft_cached_prefix", (time.time() - t) * 1e3, "ms")
row("peak_rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MB")
