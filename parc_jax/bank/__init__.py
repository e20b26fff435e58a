"""Model bank files: the format, validation, a streaming reader, a writer and a command line.

A bank holds one target (probe labels, optional reference features) and the probe features of
many source models. ``bank.msgpack`` is one msgpack map whose NumPy arrays use a msgpack
extension type (:mod:`parc_jax.bank._codec`; the layout of ``flax.serialization``, so either
side reads the other's files)::

    {"format": "parc-bank", "version": 2,
     "target": {"name": str, "task": "classification" | "multilabel" | "regression",
                "labels": int [n] (classification), 0/1 float [n, K] (multilabel) or
                          real [n] / [n, C] (regression: C outputs, each varying),
                "num_classes": int (K; classification and multilabel only),
                "num_images": int (optional),
                "reference_features": float [n, d_r] or {architecture: float [n, d_r]}
                                      (optional)},
     "models": [{"name": str, "features": float16|float32 [n, d], "architecture": str,
                 "probs": float [n, z] (optional), "depth": int (optional),
                 "source": str (optional), "source_images": int (optional),
                 "meta": map of msgpack-native values (optional)}, ...]}

Version 1 (still read; written before targets named their task) has no ``task``: ``[n]``
labels are a classification target, ``[n, K]`` a multi-label one, and ``num_classes`` is
always required. Writers emit version 2. In memory a regression target's ``num_classes`` is
its number of outputs ``C``; it is not written to the file.

Readers accept ``models`` as a list or as a map ``{"0": ..., "1": ...}`` (what
``flax.serialization.to_state_dict`` makes of a list); writers emit a list, which round-trips.
Unknown keys are rejected (a misspelt ``"prob"`` would otherwise silently drop LEEP/NCE);
free-form information belongs in ``meta``.

A bank may also be a directory of such files (shards, ``*.msgpack`` sorted by name, hidden
files ignored) describing the same target. Shards are read one at a time.

Modules: ``_format`` (records, constants, errors), ``_validate`` (every field),
``_codec`` (msgpack with arrays), ``_reader`` (scanner, :class:`BankReader`), ``_writer``,
``_build`` (from arrays or ``.npz`` files), ``_info`` and ``cli``.
"""

from parc_jax.bank._build import bank_from_arrays as bank_from_arrays
from parc_jax.bank._build import npz_folder_to_bank as npz_folder_to_bank
from parc_jax.bank._format import FORMAT as FORMAT
from parc_jax.bank._format import VERSION as VERSION
from parc_jax.bank._format import Bank as Bank
from parc_jax.bank._format import BankError as BankError
from parc_jax.bank._format import ModelEntry as ModelEntry
from parc_jax.bank._format import Target as Target
from parc_jax.bank._info import bank_info as bank_info
from parc_jax.bank._reader import BankReader as BankReader
from parc_jax.bank._reader import iter_models as iter_models
from parc_jax.bank._reader import open_bank as open_bank
from parc_jax.bank._reader import read_bank as read_bank
from parc_jax.bank._validate import bank_to_tree as bank_to_tree
from parc_jax.bank._validate import validate_bank as validate_bank
from parc_jax.bank._validate import validate_tree as validate_tree
from parc_jax.bank._writer import merge_banks as merge_banks
from parc_jax.bank._writer import write_bank as write_bank
from parc_jax.bank.cli import main as main

__all__ = [
    "FORMAT",
    "VERSION",
    "Bank",
    "BankError",
    "BankReader",
    "ModelEntry",
    "Target",
    "bank_from_arrays",
    "bank_info",
    "bank_to_tree",
    "iter_models",
    "main",
    "merge_banks",
    "npz_folder_to_bank",
    "open_bank",
    "read_bank",
    "validate_bank",
    "validate_tree",
    "write_bank",
]
