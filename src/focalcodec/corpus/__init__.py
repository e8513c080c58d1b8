"""Corpus tokenization: many audio files -> Parquet shards of FocalCodec tokens.

Resumable, deterministic and scaled out with PyTorch's own launcher (``torchrun``).

Output folder of :func:`tokenize_corpus` (``out/``)::

    plan.json                    what the run tokenizes: file list digest, shard size, model identity
    shards/shard-000000.parquet  one row per utterance: id, path, duration, num_samples, num_tokens, tokens
    markers/shard-000000.json    the shard's "done" marker: sha256 of the Parquet file, totals, its errors
    errors.tsv                   files that could not be tokenized: id, path, reason
    index.json                   every shard with its checksum, the totals and the model identity

How the work is laid out (so that the output never depends on how it was run):

- The file list is put in a fixed order (sorted relative paths of a folder, or the manifest's
  order) and cut into shards of ``shard_size`` consecutive utterances. Shard ``k`` is done by
  rank ``k % world_size``; each rank writes its own shards and rank 0 writes ``errors.tsv`` and
  ``index.json`` once every rank is done. One process or many, the files are byte-identical.
- Inside a shard, DataLoader workers read, mix down and resample the audio; the main process
  sorts a window of utterances by length and encodes them in padded batches with per-item
  lengths. :meth:`FocalCodec.encode` is batch-invariant, so each utterance gets exactly the
  tokens it gets alone. Utterances longer than one window (``windowing``: 64 s by default) are
  encoded alone, window by window (:func:`focalcodec.longform.encode_long`), so memory does not
  grow with the square of a file's duration; every utterance thus gets exactly the tokens
  ``focalcodec encode`` gives its file. Rows are written in the fixed order, not in batch order.
- A shard is finished once its marker exists and the Parquet file's sha256 matches it. A
  restarted run skips finished shards and redoes the rest, so a killed run restarted with the
  same command gives the same bytes as an uninterrupted one.

Reading back: :class:`TokenCorpus` (iterate, fetch by id), :class:`TokenDataset` (a PyTorch
``Dataset``) and :func:`collate_tokens` (padding for a ``DataLoader``).

Modules, one concern each: :mod:`.listing` (the file list), :mod:`.shards` (what is on disk and
how a restart checks it), :mod:`.run` (reading, batching and encoding across ranks),
:mod:`.reader` (reading back).
"""

from .listing import CorpusItem, list_corpus
from .reader import TokenCorpus, TokenDataset, Utterance, collate_tokens
from .run import TokenizeSummary, length_batches, tokenize_corpus
from .shards import model_identity

__all__ = [
    "CorpusItem",
    "TokenCorpus",
    "TokenDataset",
    "TokenizeSummary",
    "Utterance",
    "collate_tokens",
    "length_batches",
    "list_corpus",
    "model_identity",
    "tokenize_corpus",
]
