"""Shared helpers for the NWC codec training scripts (paths, hashing, logging)."""
import hashlib
import json
import os
import sys
import time

CHUNK = 16          # d: values per chunk (one latent per weight)
ROW = 1024          # values per training row (64 chunks)
CHUNKS_PER_ROW = ROW // CHUNK


def nwc_cache():
    return os.environ.get("NWC_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "nwc"))


def repo_root():
    return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def sha256_file(path, bufsize=1 << 22):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def log(*a):
    print(time.strftime("[%H:%M:%S]"), *a, file=sys.stderr, flush=True)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
