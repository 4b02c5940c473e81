#!/usr/bin/env python3
"""Real-client checks of `nwc serve` (scripts/check-serve.sh runs this).

  check-serve.py clients --base-url URL --model ID
      the official `openai` client: chat and completions, streamed and not,
      stream_options.include_usage, and the errors it raises for a bad
      request; prints a transcript and exits 1 on a failed check.
  check-serve.py load --base-url URL --model ID [--clients 8] [--duration 60]
      a bounded load test: N clients, each sending streamed chat requests one
      after another for the duration; prints JSON (requests/s, tokens/s, p50
      and p99 time to first token and to completion, errors).
"""
import argparse
import json
import sys
import threading
import time

import openai
from openai import OpenAI

FAILED = []


def check(cond, what):
    print(("  ok   " if cond else "  FAIL ") + what)
    if not cond:
        FAILED.append(what)


def show(title, obj):
    print(f"--- {title}")
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(exclude_none=True)
    print(json.dumps(obj, indent=1, ensure_ascii=False))


def clients(args):
    c = OpenAI(base_url=args.base_url, api_key="none", max_retries=0)
    print(f"openai-python {openai.__version__} against {args.base_url}")
    models = c.models.list()
    show("models.list()", models)
    check([m.id for m in models.data] == [args.model], "models.list() serves the model")

    msgs = [{"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "What is the capital of France?"}]
    r = c.chat.completions.create(model=args.model, messages=msgs, temperature=0, max_tokens=24)
    show("chat.completions.create (temperature 0)", r)
    text = r.choices[0].message.content
    check(r.object == "chat.completion" and r.choices[0].message.role == "assistant" and text, "chat completion")
    check("Paris" in text, "the answer names Paris")
    check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, "usage adds up")

    chunks = list(c.chat.completions.create(model=args.model, messages=msgs, temperature=0, max_tokens=24,
                                            stream=True, stream_options={"include_usage": True}))
    print(f"--- chat.completions.create(stream=True, include_usage): {len(chunks)} chunks")
    for ch in chunks[:3] + [None] + chunks[-2:]:
        print("   ...") if ch is None else print("  ", ch.model_dump_json(exclude_none=True))
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    check(streamed == text, f"streamed text equals the non-streamed one ({streamed!r})")
    check(chunks[0].choices[0].delta.role == "assistant", "first chunk carries the role")
    check(chunks[-2].choices[0].finish_reason == r.choices[0].finish_reason, "finish chunk")
    check(chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens, "usage chunk")

    chunks = list(c.chat.completions.create(model=args.model, messages=msgs, temperature=0.8, seed=3,
                                            max_tokens=16, stream=True))
    check(all(ch.usage is None for ch in chunks) and chunks[-1].choices[0].finish_reason in ("stop", "length"),
          "stream without include_usage has no usage chunk")
    a = c.chat.completions.create(model=args.model, messages=msgs, temperature=0.8, seed=3, max_tokens=16)
    b = c.chat.completions.create(model=args.model, messages=msgs, temperature=0.8, seed=3, max_tokens=16)
    check(a.choices[0].message.content == b.choices[0].message.content, "the same seed gives the same sample")

    r = c.completions.create(model=args.model, prompt="One, two, three, four, five,", temperature=0, max_tokens=12,
                             stop=[" nine"])
    show("completions.create (stop ' nine')", r)
    check(r.object == "text_completion" and r.choices[0].text.startswith(" six, seven"), "completion text")
    check(r.choices[0].finish_reason == "stop" and " nine" not in r.choices[0].text, "stop string ends it, cut")
    chunks = list(c.completions.create(model=args.model, prompt="One, two, three, four, five,", temperature=0,
                                       max_tokens=12, stop=[" nine"], stream=True,
                                       stream_options={"include_usage": True}))
    print(f"--- completions.create(stream=True, include_usage): {len(chunks)} chunks; last two:")
    for ch in chunks[-2:]:
        print("  ", ch.model_dump_json(exclude_none=True))
    check("".join(ch.choices[0].text for ch in chunks if ch.choices) == r.choices[0].text, "streamed completion")
    check(chunks[-1].usage.completion_tokens == r.usage.completion_tokens, "completion usage chunk")

    for what, kw, param in [
        ("unknown model", dict(model="gpt-4o", messages=msgs), "model"),
        ("empty messages", dict(model=args.model, messages=[]), "messages"),
        ("negative max_tokens", dict(model=args.model, messages=msgs, max_tokens=-3), "max_tokens"),
        ("n=2", dict(model=args.model, messages=msgs, n=2), "n"),
    ]:
        try:
            c.chat.completions.create(**kw)
            check(False, f"{what}: BadRequestError")
        except openai.BadRequestError as e:
            print(f"--- {what}: {type(e).__name__} {e.status_code} {json.dumps(e.body)}")
            check(e.status_code == 400 and e.body["type"] == "invalid_request_error" and e.body["param"] == param,
                  f"{what}: 400 invalid_request_error, param {param}")
    if FAILED:
        print(f"{len(FAILED)} checks failed")
        sys.exit(1)
    print("all checks passed")


PROMPTS = ["What is the capital of France?", "Name three colours.", "Write a haiku about the sea.",
           "What is 12 times 7?", "Give me a tip for learning Go.", "Why is the sky blue?",
           "Say hello in Spanish.", "What do bees make?"]


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def load(args):
    c = OpenAI(base_url=args.base_url, api_key="none", max_retries=0, timeout=120)
    lock = threading.Lock()
    ttft, total, toks, errors = [], [], [], []
    t0 = time.monotonic()
    end = t0 + args.duration

    def worker(i):
        n = 0
        while time.monotonic() < end:
            start = time.monotonic()
            first = None
            try:
                stream = c.chat.completions.create(
                    model=args.model, messages=[{"role": "user", "content": PROMPTS[(i + n) % len(PROMPTS)]}],
                    temperature=0.7, seed=i * 1000 + n, max_tokens=args.max_tokens, stream=True,
                    stream_options={"include_usage": True})
                used = None
                for ch in stream:
                    if first is None and ch.choices and ch.choices[0].delta.content:
                        first = time.monotonic() - start
                    if ch.usage is not None:
                        used = ch.usage.completion_tokens
                done = time.monotonic() - start
                with lock:
                    total.append(done)
                    toks.append(used or 0)
                    if first is not None:
                        ttft.append(first)
            except Exception as e:  # counted, and the first few shown
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
            n += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    out = {
        "clients": args.clients, "duration_s": round(wall, 1), "max_tokens": args.max_tokens,
        "requests": len(total), "errors": len(errors), "error_samples": errors[:5],
        "requests_per_s": round(len(total) / wall, 3), "tokens": sum(toks),
        "tokens_per_s": round(sum(toks) / wall, 2),
        "ttft_p50_s": round(percentile(ttft, 50), 3), "ttft_p99_s": round(percentile(ttft, 99), 3),
        "total_p50_s": round(percentile(total, 50), 3), "total_p99_s": round(percentile(total, 99), 3),
    }
    print(json.dumps(out, indent=1))
    if errors:
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["clients", "load"])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    clients(args) if args.mode == "clients" else load(args)


if __name__ == "__main__":
    main()
