"""A tiny random-weight Llama as a GGUF file, written here with the `gguf` package.

Two layers, 64-wide, head_dim 32, and a SentencePiece-style vocabulary (byte fallback plus the
frequent pieces of a corpus, so an 8 KB candidate prompt is about 2,000 tokens, not 8,000) with a
chat template in its metadata. Random weights answer nonsense, fast: what the real-server tier
needs is llama.cpp's server loading, tokenizing, batching, dying and reloading a real model.
Nothing is downloaded.

    python -m tests.real.tiny_gguf OUT.gguf [CORPUS.jsonl]
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

EMBED = 64
HEAD_DIM = 32  # CPU attention kernels want at least 32
LAYERS = 2
FFN = 128
CONTEXT = 16384
PIECES = 3000  # vocabulary pieces learned from the corpus, besides the 256 bytes
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_PIECE = re.compile(r"\s?\w+|[^\w\s]+|\s+")
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6  # llama.cpp's token types


def vocabulary(corpus: Iterable[str]) -> tuple[list[str], list[float], list[int]]:
    """<unk>, <s>, </s>, the 256 byte tokens, every printable ASCII character, then the most
    frequent corpus pieces with every prefix of each (SentencePiece merges pairs of pieces that
    are in the vocabulary, so a piece is only reachable through its prefixes)."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [_UNKNOWN, _CONTROL, _CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [_BYTE] * 256
    counts: Counter[str] = Counter()
    for text in corpus:
        counts.update(piece.replace(" ", "\u2581") for piece in _PIECE.findall(text))
    pieces: dict[str, None] = dict.fromkeys(chr(c) for c in range(33, 127))
    pieces["\u2581"] = None
    for piece, _ in counts.most_common():
        if len(pieces) >= PIECES:
            break
        for end in range(2, min(len(piece), 16) + 1):
            pieces[piece[:end]] = None
    tokens += list(pieces)
    types += [_NORMAL] * len(pieces)
    # longer pieces first: SentencePiece merges the highest-scoring pair
    scores = [0.0] * (3 + 256) + [float(len(p)) for p in pieces]
    return tokens, scores, types


def write_tiny_llama(path: Path, corpus: Iterable[str] = (), seed: int = 0) -> Path:
    import gguf

    tokens, scores, types = vocabulary(corpus)
    rng = np.random.default_rng(seed)
    heads = EMBED // HEAD_DIM

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("harness-tiny-llama")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBED)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)
    writer.add_tensor("token_embd.weight", weight(len(tokens), EMBED))
    writer.add_tensor("output_norm.weight", np.ones(EMBED, dtype=np.float32))
    writer.add_tensor("output.weight", weight(len(tokens), EMBED))
    for i in range(LAYERS):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(EMBED, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weight(EMBED, EMBED))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(EMBED, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weight(FFN, EMBED))
        writer.add_tensor(f"{block}.ffn_up.weight", weight(FFN, EMBED))
        writer.add_tensor(f"{block}.ffn_down.weight", weight(EMBED, FFN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def corpus_of(dataset: Path, limit: int = 200) -> list[str]:
    """The message texts of a dataset's first requests, to learn the vocabulary from."""
    import itertools

    import generators

    texts = []
    for _, body in itertools.islice(generators.iter_requests(dataset), limit):
        texts += [str(m.get("content", "")) for m in body.get("messages", ())]
    return texts


if __name__ == "__main__":
    out = Path(sys.argv[1])
    texts = corpus_of(Path(sys.argv[2])) if len(sys.argv) > 2 else []
    print(write_tiny_llama(out, texts))
