"""Build the tiny random-weight models the end-to-end suite serves with vLLM (no model hub).

Writes, under OUT (default ``e2e/.cache/models``):

- ``tokenizer/``: a byte-level BPE tokenizer trained here on a synthetic corpus;
- ``target/``: a Llama with hidden size 64, 2 layers, 2 heads (head size 32: vLLM's CPU
  attention backend needs at least 32), random weights from seed 0;
- ``random-draft/``: a 1-layer Llama with the same tokenizer and independent random weights
  (seed 1): as a drafter for ``target`` it accepts almost nothing.

A draft model identical to the target is ``target/`` itself. Runs in the vLLM venv (it needs
torch, transformers and tokenizers); idempotent: existing complete models are kept.

    python e2e/build_tiny_model.py [OUT]
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

VOCAB_SIZE = 512
DONE = "specwise-e2e.json"
WORDS = (
    "the a an of to in is was for on that with as by at from it this be are or "
    "speculative decoding draft model token accept reject alpha cost verify batch "
    "server request latency throughput counter metric window class prometheus scrape "
    "quick brown fox jumps over lazy dog one two three four five six seven eight nine "
    "ten hello world python vllm llama tiny random weight cpu engine step position"
)


def corpus(lines: int = 4000, seed: int = 7) -> list[str]:
    """Deterministic English-like text: enough for a byte-level BPE with a few hundred merges."""
    rng = random.Random(seed)
    words = WORDS.split()
    out = []
    for _ in range(lines):
        n = rng.randint(5, 20)
        out.append(" ".join(rng.choice(words) for _ in range(n)).capitalize() + ".")
    return out


def build_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **specials)
    fast.save_pretrained(out)


def build_llama(out: Path, tokenizer_dir: Path, *, layers: int, seed: int) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
        # larger than the default 0.02 so the argmax is clear of float noise: greedy
        # decoding with an identical drafter then accepts (almost) every draft token
        initializer_range=0.2,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent / ".cache" / "models"
    root.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = root / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").exists():
        build_tokenizer(tokenizer_dir)
    for name, layers, seed in (("target", 2, 0), ("random-draft", 1, 1)):
        out = root / name
        if (out / DONE).exists():
            print(f"kept {out}")
            continue
        build_llama(out, tokenizer_dir, layers=layers, seed=seed)
        (out / DONE).write_text(json.dumps({"layers": layers, "seed": seed}) + "\n")
        print(f"built {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
