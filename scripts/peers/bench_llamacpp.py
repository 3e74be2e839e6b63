#!/usr/bin/env python3
"""Peer for bench-generate: llama.cpp (llama-cpp-python) on the same GGUF, same prompt, 2 threads.
Prints TSV rows `llamacpp\tmetric\tvalue\tunit`.  pip install llama-cpp-python"""
import os, sys, time
from llama_cpp import Llama

models = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/hotline-triage/models")
threads = int(os.environ.get("BENCH_THREADS", "2"))
t = time.time()
llm = Llama(model_path=f"{models}/gemma-3-270m/gemma-3-270m-q4_k_m.gguf", n_ctx=4096, n_threads=threads, n_batch=512, verbose=False)
print(f"llamacpp\tload_time\t{time.time() - t:.2f}\ts")
example = "### 来信\n小区门口的路灯坏了一个月，晚上很黑，老人孩子出行不便，希望尽快维修。\n### 答复\n您好！您反映的问题已转交属地街道办事处，经现场核实，路灯线路老化，已于三日内更换完毕。感谢您的监督。\n"
prompt = f"以下是12345政务服务热线对市民来信的答复存档。\n{example * 12}### 来信\n公交车不按站停车，司机态度差。\n### 答复\n"
tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
print(f"llamacpp\tprompt_tokens\t{len(tokens)}\ttokens")
t = time.time()
llm.eval(tokens)
pp = time.time() - t
print(f"llamacpp\tprompt_tok_per_s\t{len(tokens) / pp:.2f}\ttok/s")
n, t = 0, time.time()
for token in llm.generate([], temp=0.0, reset=False):
    n += 1
    if n >= 64:
        break
print(f"llamacpp\tdecode_tok_per_s\t{n / (time.time() - t):.2f}\ttok/s")
