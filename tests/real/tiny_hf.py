"""A tiny random-weight Llama as a Hugging Face model directory, for real vLLM.

Two layers, 64-wide, head_dim 32 (vLLM's CPU attention rejects 16), bfloat16 safetensors written
by transformers from a config, and a byte-level BPE tokenizer trained here on a corpus (so an 8 KB
candidate prompt is about 2,400 tokens, not 8,000) with a chat template. Random weights answer
nonsense, fast: the tier needs vLLM loading, tokenizing, batching, dying and reloading a real
model. Nothing is downloaded. Runs in the vLLM environment (torch, transformers, tokenizers):

    .venv-vllm/bin/python tests/real/tiny_hf.py OUT_DIR CORPUS.jsonl

CORPUS.jsonl holds one JSON string per line (the conftest writes the dataset's message texts).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EMBED = 64
HEAD_DIM = 32
LAYERS = 2
FFN = 128
CONTEXT = 16384
VOCAB = 4096
SPECIALS = ("<unk>", "<s>", "</s>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def write_tiny_llama(out: Path, corpus: list[str], seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte stays encodable
        show_progress=False,
    )
    bpe.train_from_iterator(corpus or ["hello world"], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = CONTEXT
    tokenizer.save_pretrained(out)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=EMBED,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=EMBED // HEAD_DIM,
        num_key_value_heads=EMBED // HEAD_DIM,
        head_dim=HEAD_DIM,
        max_position_embeddings=CONTEXT,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        dtype="bfloat16",  # what vLLM's CPU engine computes in
    )
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    return out


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    corpus = []
    if len(argv) > 1:
        with open(argv[1], encoding="utf-8") as lines:
            corpus = [json.loads(line) for line in lines if line.strip()]
    print(write_tiny_llama(out, corpus))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
