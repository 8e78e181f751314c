"""A restricted unpickler: plain data and uint8/int64 numpy arrays, never any other code.

CIFAR's original files are Python pickles. `pickle.load` of an untrusted file can call ANY
importable callable (os.system, eval, ...); `safe_unpickle` cannot import or call anything
except a handful of inert builders for uint8/int64 numpy arrays, so a tampered file cannot run
code. This module is a security boundary: keep it small and keep every global it allows inert.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
from typing import Any

import numpy as np

from sslax.data.sources.base import CorruptDatasetError


class UnsafePickleError(CorruptDatasetError):
  """A pickle asked for something the restricted unpickler does not allow."""


# The CIFAR "python version" files are pickles of dicts whose b"data" entry is a numpy uint8
# array. Unpickling a numpy array needs numpy globals, and pickle.load of an untrusted file can
# call ANY importable callable (os.system, eval, ...). `_RestrictedUnpickler.find_class` refuses
# every global except these, each of which is replaced by an inert stand-in:
#   numpy.core.multiarray._reconstruct / numpy._core.multiarray._reconstruct  (py2/numpy<2 and
#       numpy>=2 spellings of how protocol <= 4 pickles rebuild an array)
#   numpy._core.numeric._frombuffer / numpy.core.numeric._frombuffer  (protocol 5 pickles)
#   numpy.ndarray  (only as the argument of _reconstruct), numpy.dtype
#   _codecs.encode  (how Python 3 writes bytes in protocol 2 pickles; latin-1 only)
# The stand-ins only record shape, dtype name and raw bytes; after loading, each recorded array
# is checked (dtype uint8 or int64 only, byte count matching the shape) and built with
# np.frombuffer. numpy's own pickle machinery (__setstate__ of ndarray/dtype) never sees the
# file's contents, and no object dtype, subclass (memmap, recarray, ...) or structured dtype
# can be made. Everything else a pickle can build without globals is plain data: dict, list,
# tuple, set, str, bytes, int, float, bool, None.

_ALLOWED_DTYPES = {
  "u1": np.dtype(np.uint8),
  "uint8": np.dtype(np.uint8),
  "i8": np.dtype(np.int64),
  "int64": np.dtype(np.int64),
}
_MAX_PICKLE_DEPTH = 16


def _as_str(x: Any, what: str) -> str:
  if isinstance(x, bytes):
    return x.decode("latin-1")
  if isinstance(x, str):
    return x
  raise UnsafePickleError(f"pickle: {what} must be a string, got {type(x).__name__}")


class _NdarrayMarker:
  """Stands for the class `numpy.ndarray`: not callable, no state (BUILD on it fails)."""

  __slots__ = ()

  def __setstate__(self, state):
    raise UnsafePickleError("pickle: cannot set state on numpy.ndarray")


_NDARRAY = _NdarrayMarker()


class _DTypeSpec:
  """Stand-in for numpy.dtype(name, align, copy) + __setstate__: records name and byte order."""

  def __init__(self, name, align=False, copy=False):
    del align, copy
    key = _as_str(name, "dtype")
    if key not in _ALLOWED_DTYPES:
      raise UnsafePickleError(f"pickle: dtype {key!r} not allowed (only uint8 and int64)")
    self.dtype = _ALLOWED_DTYPES[key]
    self.byteorder = "="

  def __setstate__(self, state):
    if not isinstance(state, tuple) or len(state) < 5:
      raise UnsafePickleError(f"pickle: unexpected dtype state {state!r:.80}")
    order = _as_str(state[1], "dtype byte order")
    if order not in ("<", ">", "|", "="):
      raise UnsafePickleError(f"pickle: bad dtype byte order {order!r}")
    if any(s is not None for s in state[2:5]):  # subarray, names, fields
      raise UnsafePickleError("pickle: structured / sub-array dtypes not allowed")
    self.byteorder = order

  def numpy_dtype(self) -> np.dtype:
    if self.dtype.itemsize == 1 or self.byteorder in ("|", "="):
      return self.dtype
    return self.dtype.newbyteorder(self.byteorder)


class _ArraySpec:
  """Stand-in for an ndarray: shape, dtype and raw bytes, validated before use."""

  def __init__(self, shape=None, dtype=None, data=None, order="C"):
    self.shape, self.dtype, self.data, self.fortran = shape, dtype, data, order == "F"

  def __setstate__(self, state):
    if not isinstance(state, tuple):
      raise UnsafePickleError("pickle: bad ndarray state")
    if len(state) == 5:
      state = state[1:]  # Drop the version number.
    if len(state) != 4:
      raise UnsafePickleError("pickle: bad ndarray state")
    self.shape, self.dtype, self.fortran, self.data = state[0], state[1], bool(state[2]), state[3]

  def to_numpy(self) -> np.ndarray:
    if not isinstance(self.dtype, _DTypeSpec):
      raise UnsafePickleError("pickle: array without an allowed dtype")
    shape = self.shape
    if not isinstance(shape, tuple) or not all(
      isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
      raise UnsafePickleError(f"pickle: bad array shape {shape!r:.80}")
    data = self.data
    if isinstance(data, str):
      data = data.encode("latin-1")
    elif isinstance(data, (bytearray, memoryview, pickle.PickleBuffer)):
      data = bytes(data)
    if not isinstance(data, bytes):
      raise UnsafePickleError(f"pickle: array data must be bytes, got {type(data).__name__}")
    dtype = self.dtype.numpy_dtype()
    if len(data) != math.prod(shape) * dtype.itemsize:
      raise CorruptDatasetError(
        f"pickle: array of shape {shape} and dtype {dtype} needs "
        f"{math.prod(shape) * dtype.itemsize} bytes, has {len(data)}"
      )
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if self.fortran else "C")
    return array.astype(dtype.newbyteorder("="), copy=True)


def _safe_reconstruct(cls, shape, typecode):
  del shape, typecode
  if cls is not _NDARRAY:
    raise UnsafePickleError("pickle: _reconstruct only allowed for numpy.ndarray")
  return _ArraySpec()


def _safe_frombuffer(buf, dtype, shape, order):
  if not isinstance(dtype, _DTypeSpec):
    raise UnsafePickleError("pickle: _frombuffer without an allowed dtype")
  return _ArraySpec(shape=shape, dtype=dtype, data=buf, order=_as_str(order, "order"))


def _safe_codecs_encode(obj, encoding="utf-8", errors="strict"):
  del errors
  if not isinstance(obj, str) or _as_str(encoding, "encoding").lower() not in ("latin1", "latin-1"):
    raise UnsafePickleError("pickle: _codecs.encode only allowed for latin-1 strings")
  return obj.encode("latin-1")


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
  ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
  ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
  ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
  ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
  ("numpy", "ndarray"): _NDARRAY,
  ("numpy", "dtype"): _DTypeSpec,
  ("_codecs", "encode"): _safe_codecs_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Loads plain data and uint8/int64 numpy arrays only; refuses every other global."""

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _SAFE_GLOBALS[(module, name)]
    except KeyError:
      raise UnsafePickleError(f"pickle: refusing to load global {module}.{name}") from None

  def persistent_load(self, pid: Any) -> Any:
    raise UnsafePickleError("pickle: persistent ids are not allowed")


def _materialize(obj: Any, depth: int = 0) -> Any:
  """Replaces the stand-ins with numpy arrays; rejects anything that is not plain data."""
  if depth > _MAX_PICKLE_DEPTH:
    raise UnsafePickleError("pickle: data nested too deeply")
  if isinstance(obj, (str, bytes, int, float, complex, bool, type(None))):
    return obj
  if isinstance(obj, _ArraySpec):
    return obj.to_numpy()
  if isinstance(obj, dict):
    return {_materialize(k, depth + 1): _materialize(v, depth + 1) for k, v in obj.items()}
  if isinstance(obj, list):
    if obj and all(type(x) is int for x in obj):  # Fast path for label lists.
      return obj
    return [_materialize(x, depth + 1) for x in obj]
  if isinstance(obj, tuple):
    return tuple(_materialize(x, depth + 1) for x in obj)
  if isinstance(obj, (set, frozenset)):
    return type(obj)(_materialize(x, depth + 1) for x in obj)
  raise UnsafePickleError(f"pickle: unexpected object of type {type(obj).__name__}")


def safe_unpickle(data: bytes | io.BufferedIOBase, encoding: str = "bytes") -> Any:
  """Unpickles plain data and uint8/int64 numpy arrays, never calling anything else.

  `encoding="bytes"` reads Python 2 strings as bytes (CIFAR's keys are then b"data", ...).
  Raises UnsafePickleError for anything else (e.g. a pickle that would call os.system) and
  CorruptDatasetError for a malformed pickle.
  """
  f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
  try:
    obj = _RestrictedUnpickler(f, encoding=encoding).load()
  except CorruptDatasetError:
    raise
  except (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    struct.error,
    RecursionError,
  ) as e:
    raise CorruptDatasetError(f"pickle: malformed ({type(e).__name__}: {e})") from e
  return _materialize(obj)
