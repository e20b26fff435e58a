"""The batched scoring engine: width buckets, padding, fixed-size chunks, streaming, sharding.

A chunk of ``B`` models is scored by ``jax.jit(jax.vmap(...))`` programs: one per width bucket
that reduces the features once to every PCA width the methods use (one eigendecomposition for
all: ``eigh`` on CPUs; on accelerators, where a batch of ``eigh`` is a loop of solver calls,
certified subspace iteration, and ``eigh`` for the models it does not certify: see
``numerics.EXACT_PCA_SOLVER``), then one per method on the reduced features; the target's
reference features (rsa, dds) are reduced once per probe set, not per model. Full chunks share
one shape; a bucket's last, partial chunk is padded (with copies of a real model whose results
are dropped) to the next power of two, so over banks of any sizes a bucket compiles at most
``1 + log2(B)`` programs, each once (a second full chunk never recompiles). A model's scores are
bitwise the same for the same chunk shape; across shapes XLA may round differently (measured up
to 1.2e-5 relative, ranks unchanged). Models stream in shard by shard from a reader thread that
pads chunk i + 2 while a stager thread copies chunk i + 1 to the device and the device scores
chunk i; host memory holds a few chunks, never the whole bank. When several accelerators are
visible the model axis of each chunk is sharded over a ``Mesh`` of them; several XLA:CPU devices
share the same cores, and a chunk runs on one of them (:func:`sharding_mesh`).

Modules: ``_types`` (records, width buckets), ``_methods`` (which methods run), ``_devices``
(mesh or one CPU device), ``_assembly`` (host-side chunks), ``_programs`` (compiled programs)
and ``_stream`` (:func:`score_stream`).
"""

from parc_jax.engine._assembly import HostBuffers as HostBuffers
from parc_jax.engine._assembly import remainder_size as remainder_size
from parc_jax.engine._devices import make_mesh as make_mesh
from parc_jax.engine._devices import sharding_mesh as sharding_mesh
from parc_jax.engine._methods import add_bank_level as add_bank_level
from parc_jax.engine._methods import engine_methods as engine_methods
from parc_jax.engine._methods import method_dims as method_dims
from parc_jax.engine._methods import method_names as method_names
from parc_jax.engine._methods import resolve_methods as resolve_methods
from parc_jax.engine._programs import TRACE_COUNT as TRACE_COUNT
from parc_jax.engine._programs import ChunkScorer as ChunkScorer
from parc_jax.engine._programs import CompileRecord as CompileRecord
from parc_jax.engine._programs import chunk_scorer as chunk_scorer
from parc_jax.engine._stream import score_stream as score_stream
from parc_jax.engine._types import DEFAULT_CHUNK_SIZE as DEFAULT_CHUNK_SIZE
from parc_jax.engine._types import EngineOptions as EngineOptions
from parc_jax.engine._types import ModelBatch as ModelBatch
from parc_jax.engine._types import ModelFacts as ModelFacts
from parc_jax.engine._types import TargetInfo as TargetInfo
from parc_jax.engine._types import bucket_width as bucket_width

__all__ = [
    "ChunkScorer",
    "CompileRecord",
    "DEFAULT_CHUNK_SIZE",
    "EngineOptions",
    "HostBuffers",
    "ModelBatch",
    "ModelFacts",
    "TRACE_COUNT",
    "TargetInfo",
    "bucket_width",
    "chunk_scorer",
    "make_mesh",
    "method_dims",
    "add_bank_level",
    "engine_methods",
    "method_names",
    "remainder_size",
    "resolve_methods",
    "score_stream",
    "sharding_mesh",
]
