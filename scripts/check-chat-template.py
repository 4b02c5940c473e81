#!/usr/bin/env python3
"""Render the chat templates of the reference GGUF models with Python jinja2,
configured as transformers configures it for apply_chat_template
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
raise_exception, strftime_now, tojson), on several conversations, and write
the expected strings to plugin/chat/testdata/templates.json, the test data of
plugin/chat (go test compares the Go rendering with them, without Python).

When transformers can read the GGUF's tokenizer it also checks that
tokenizer.apply_chat_template(..., tokenize=False) gives the same strings.

    $NWC_CACHE/venv-train/bin/python scripts/check-chat-template.py [--out PATH]
Needs: jinja2, gguf (and optionally transformers).
"""
import argparse, json, os, sys, glob
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
import gguf

CONVERSATIONS = [
    ("system+user", [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is the capital of France?"}], True),
    ("user only", [
        {"role": "user", "content": "Write a haiku about compression."}], True),
    ("multi-turn", [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "7 is a prime number."},
        {"role": "user", "content": "And an even one?"}], True),
    ("multi-turn, no generation prompt", [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"}], False),
    ("special characters", [
        {"role": "user", "content": "Quote: \"{{ not a tag }}\" {% raw %} <b>bold</b>\n\ttab, café, 日本語 ✓"}], True),
]

# Templates in the styles of other model families (written here, not read
# from a model file): bos_token, trim, namespace-free slicing, loop.first,
# raise_exception on roles a template refuses, and blocks without "-" that
# trim_blocks / lstrip_blocks must clean up.
INLINE = {
    "inline:llama3-style": ("<|begin_of_text|>", "<|eot_id|>",
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    "inline:mistral-style": ("<s>", "</s>",
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"),
    "inline:gemma-style": ("<bos>", "<eos>", """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- set role = "model" if message['role'] == 'assistant' else message['role'] -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""),
    "inline:plain-blocks": ("", "", """{% for m in messages %}
{% if m.role == 'system' %}
System: {{ m.content }}
{% else %}
  {{ m.role | capitalize }}: {{ m.content }}
{% endif %}
{% endfor %}
{% if add_generation_prompt %}
Assistant:
{% endif %}
"""),
}

def render_cases(e, src, bos, eos, tok, label):
    t = e.from_string(src)
    cases = []
    for name, msgs, gen in CONVERSATIONS:
        case = {"name": name, "messages": msgs, "add_generation_prompt": gen}
        try:
            case["want"] = t.render(messages=msgs, add_generation_prompt=gen, bos_token=bos, eos_token=eos)
        except jinja2.exceptions.TemplateError as ex:
            case["error"] = str(ex)
            print(f"{label} / {name}: raises {ex}")
            cases.append(case)
            continue
        hf = "not run"
        if tok is not None:
            got = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            hf = "same" if got == case["want"] else "DIFFERENT"
            if got != case["want"]:
                print(f"  transformers differs on {name!r}:\n{got!r}\n{case['want']!r}")
        print(f"{label} / {name}: {len(case['want'])} chars; transformers apply_chat_template: {hf}")
        cases.append(case)
    return cases

def env():
    # As transformers.utils.chat_template_utils._compile_jinja_template.
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)
    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    def strftime_now(fmt):
        return datetime.now().strftime(fmt)
    e = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    e.filters["tojson"] = tojson
    e.globals["raise_exception"] = raise_exception
    e.globals["strftime_now"] = strftime_now
    return e

def field_str(r, key):
    f = r.fields.get(key)
    return None if f is None else bytes(f.parts[-1]).decode("utf-8")

def field_int(r, key):
    f = r.fields.get(key)
    return None if f is None else int(f.parts[-1][0])

def token(r, i):
    if i is None:
        return ""
    f = r.fields["tokenizer.ggml.tokens"]
    return bytes(f.parts[f.data[i]]).decode("utf-8")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "plugin", "chat", "testdata", "templates.json"))
    ap.add_argument("--models", default=os.path.join(os.environ.get("NWC_CACHE", os.path.expanduser("~/.cache/nwc")), "models"))
    a = ap.parse_args()
    e = env()
    out = []
    for path in sorted(glob.glob(os.path.join(a.models, "*", "*.gguf"))):
        r = gguf.GGUFReader(path)
        src = field_str(r, "tokenizer.chat_template")
        if not src:
            print(f"{os.path.basename(path)}: no chat template, skipped")
            continue
        bos, eos = token(r, field_int(r, "tokenizer.ggml.bos_token_id")), token(r, field_int(r, "tokenizer.ggml.eos_token_id"))
        tok = None
        try:
            from transformers import AutoTokenizer
            tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
            if not getattr(tok, "chat_template", None):
                tok = None
        except Exception as ex:  # transformers absent or cannot read this GGUF
            print(f"{os.path.basename(path)}: transformers tokenizer unavailable ({type(ex).__name__}: {ex})")
        cases = render_cases(e, src, bos, eos, tok, os.path.basename(path))
        out.append({"model": os.path.basename(path), "template": src, "bos_token": bos, "eos_token": eos,
                    "jinja2": jinja2.__version__, "cases": cases})
    for name, (bos, eos, src) in INLINE.items():
        out.append({"model": name, "template": src, "bos_token": bos, "eos_token": eos,
                    "jinja2": jinja2.__version__, "cases": render_cases(e, src, bos, eos, None, name)})
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {a.out}: {len(out)} templates, {sum(len(o['cases']) for o in out)} renderings (jinja2 {jinja2.__version__})")

if __name__ == "__main__":
    sys.exit(main())
