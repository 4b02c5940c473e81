"""ort_load_check.py LIB API_VERSION: dlopen an ONNX Runtime library and ask for
the C API version onnxruntime_go needs; print the runtime's version, or exit
non-zero saying what is missing (used by setup.sh and setup-cuda.sh)."""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.OrtGetApiBase.restype = ctypes.POINTER(ctypes.c_void_p * 2)
base = lib.OrtGetApiBase().contents
version = ctypes.CFUNCTYPE(ctypes.c_char_p)(base[1])().decode()
api = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)(base[0])(int(sys.argv[2]))
if not api:
    sys.exit(f"ONNX Runtime {version} does not provide API version {sys.argv[2]}")
print(version)
