"""Reading a finished tokenization back: :class:`TokenCorpus` (iterate, fetch by id),
:class:`TokenDataset` (a PyTorch ``Dataset``) and :func:`collate_tokens` (padding)."""

from __future__ import annotations

import csv
import json
import operator
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..errors import InputError
from .shards import FORMAT, pyarrow_module, schema, sha256_file

__all__ = ["TokenCorpus", "TokenDataset", "Utterance", "collate_tokens"]

PathLike = str | Path


class Utterance(NamedTuple):
    """One tokenized utterance: ``tokens`` is ``(T,)`` int64."""

    id: str
    path: str
    duration: float
    num_samples: int
    tokens: Tensor


class TokenCorpus:
    """The output of :func:`tokenize_corpus`, read back.

    >>> corpus = TokenCorpus("tokens/")                       # doctest: +SKIP
    >>> for utt in corpus: ...                                # Utterance(id, path, duration, num_samples, tokens)
    >>> corpus["speaker1/utt3"].tokens                        # (T,) int64, fetched by id
    >>> corpus.model["fingerprint"], corpus.errors()          # model identity, skipped files

    ``verify=True`` checks every shard's sha256 against the index. ``cache_shards`` shards are
    kept in memory for random access.
    """

    def __init__(self, directory: PathLike, verify: bool = False, cache_shards: int = 4) -> None:
        self.directory = Path(directory)
        path = self.directory / "index.json"
        if not path.is_file():
            raise InputError(
                f"{self.directory} has no index.json: not a finished tokenization (run or resume focalcodec tokenize)"
            )
        try:
            self.index = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(f"{path} is not valid JSON: {exc}") from None
        if self.index.get("format") != FORMAT:
            raise InputError(f"{path} is not a focalcodec token index (format {self.index.get('format')!r})")
        self.shards: list[dict[str, Any]] = list(self.index["shards"])
        self._offsets = [0]
        for s in self.shards:
            self._offsets.append(self._offsets[-1] + int(s["num_rows"]))
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._cache_size = max(1, cache_shards)
        self._ids: dict[str, int] | None = None
        if verify:
            self.verify()

    # -- facts -----------------------------------------------------------------------------------
    @property
    def model(self) -> dict[str, Any]:
        """Identity of the model that made the tokens (model_id, source, fingerprint, ...)."""
        return self.index["model"]

    @property
    def shard_files(self) -> list[Path]:
        """The Parquet files, in order (e.g. for ``datasets.load_dataset("parquet", data_files=...)``)."""
        return [self.directory / s["file"] for s in self.shards]

    def __len__(self) -> int:
        return self._offsets[-1]

    def verify(self) -> None:
        """Raise :class:`InputError` when a shard is missing or its sha256 differs from the index."""
        for s, f in zip(self.shards, self.shard_files, strict=False):
            if not f.is_file():
                raise InputError(f"shard {f} listed in the index is missing")
            if sha256_file(f) != s["sha256"]:
                raise InputError(f"shard {f} does not match its checksum in the index (changed or damaged)")

    def errors(self) -> list[dict[str, str]]:
        """Files the run skipped: ``[{"id", "path", "reason"}, ...]``."""
        path = self.directory / self.index.get("errors_file", "errors.tsv")
        if not path.is_file():
            return []
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))

    # -- rows ------------------------------------------------------------------------------------
    def _read_shard(self, s: int, columns: list[str] | None = None, memory_map: bool = False) -> Any:
        """Shard ``s`` as a pyarrow table; a missing, damaged or foreign file is an
        :class:`InputError` saying to resume the run that made it."""
        pyarrow_module()
        import pyarrow.parquet as pq

        path = self.shard_files[s]
        try:
            table = pq.read_table(path, columns=columns, memory_map=memory_map)
        except FileNotFoundError:
            raise InputError(f"shard {path} is missing; resume `focalcodec tokenize` to rebuild it") from None
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors for damaged files vary
            raise InputError(
                f"shard {path} is damaged ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                "resume `focalcodec tokenize` on this folder to rebuild it"
            ) from None
        wanted = set(columns or schema().names)
        if set(table.column_names) != wanted or table.num_rows != int(self.shards[s]["num_rows"]):
            raise InputError(
                f"shard {path} does not match index.json (columns {table.column_names}, {table.num_rows} rows); "
                "resume `focalcodec tokenize` on this folder to rebuild it"
            )
        return table

    def _table(self, s: int) -> Any:
        if s in self._cache:
            self._cache.move_to_end(s)
            return self._cache[s]
        table = self._read_shard(s, memory_map=True)
        self._cache[s] = table
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return table

    @staticmethod
    def _row(table: Any, r: int) -> Utterance:
        row = {name: table.column(name)[r].as_py() for name in ("id", "path", "duration", "num_samples")}
        tokens = torch.from_numpy(table.column("tokens")[r].values.to_numpy(zero_copy_only=False).astype("int64"))
        return Utterance(row["id"], row["path"], float(row["duration"]), int(row["num_samples"]), tokens)

    def _locate(self, i: int) -> tuple[int, int]:
        import bisect

        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"utterance {i} out of range for a corpus of {len(self)}")
        s = bisect.bisect_right(self._offsets, i) - 1
        return s, i - self._offsets[s]

    def ids(self) -> list[str]:
        """Every utterance id, in corpus order."""
        return list(self._id_map())

    def _id_map(self) -> dict[str, int]:
        if self._ids is None:
            ids: dict[str, int] = {}
            for s in range(len(self.shards)):
                for uid in self._read_shard(s, columns=["id"]).column("id").to_pylist():
                    ids[uid] = len(ids)
            self._ids = ids
        return self._ids

    def __contains__(self, uid: object) -> bool:
        return uid in self._id_map()

    def __getitem__(self, key: int | str) -> Utterance:
        """Fetch by position (int) or by utterance id (str)."""
        if isinstance(key, str):
            pos = self._id_map().get(key)
            if pos is None:
                raise KeyError(f"no utterance with id {key!r} in {self.directory}")
            key = pos
        try:
            key = operator.index(key)
        except TypeError:
            raise TypeError(f"a corpus is indexed by position (int) or id (str), got {type(key).__name__}") from None
        s, r = self._locate(key)
        return self._row(self._table(s), r)

    def __iter__(self) -> Iterator[Utterance]:
        """Every utterance in corpus order, one shard in memory at a time."""
        for s in range(len(self.shards)):
            table = self._read_shard(s)
            for r in range(table.num_rows):
                yield self._row(table, r)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers: no pyarrow tables in pickles
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state


class TokenDataset(torch.utils.data.Dataset):
    """A map-style PyTorch ``Dataset`` over a tokenized corpus.

    ``dataset[i] -> {"id": str, "tokens": (T,) int64}`` (``max_tokens`` crops to the first
    ``max_tokens``). Use :func:`collate_tokens` as the DataLoader's ``collate_fn``.
    """

    def __init__(self, corpus: TokenCorpus | PathLike, max_tokens: int | None = None) -> None:
        self.corpus = corpus if isinstance(corpus, TokenCorpus) else TokenCorpus(corpus)
        self.max_tokens = max_tokens

    def __len__(self) -> int:
        return len(self.corpus)

    def __getitem__(self, i: int) -> dict[str, Any]:
        utt = self.corpus[int(i)]
        tokens = utt.tokens if self.max_tokens is None else utt.tokens[: self.max_tokens]
        return {"id": utt.id, "tokens": tokens}


def collate_tokens(batch: Sequence[Mapping[str, Any]], pad_id: int = 0) -> dict[str, Any]:
    """``[{"id", "tokens" (T_i,)}] -> {"ids": [...], "tokens": (B, T) int64 padded with pad_id,
    "lengths": (B,) int64}``. Tokens may be tensors, arrays or lists of integers."""
    from ..audio import check_token_ids

    rows = []
    for i, b in enumerate(batch):
        if "tokens" not in b:
            raise InputError(f"item {i} of the batch has no 'tokens' (keys: {', '.join(map(str, b))})")
        try:
            rows.append(check_token_ids(b["tokens"], 2**62, "tokens", (1,), "(T,)", allow_empty=True).cpu())
        except InputError as exc:
            raise InputError(f"item {i} of the batch: {exc}") from None
    lengths = torch.tensor([row.numel() for row in rows], dtype=torch.long)
    tokens = torch.full((len(batch), int(lengths.max()) if len(batch) else 0), pad_id, dtype=torch.long)
    for row, t in enumerate(rows):
        tokens[row, : lengths[row]] = t
    return {"ids": [b["id"] for b in batch], "tokens": tokens, "lengths": lengths}
