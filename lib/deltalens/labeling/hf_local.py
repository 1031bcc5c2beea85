"""A local Hugging Face causal LM as a labeler (deepseek-coder-V2-lite, Qwen2.5-Coder, ...), through transformers.

The model is loaded from a local path (or the local Hugging Face cache: ``local_files_only=True``, since the hub may
be unreachable). Prompts go through the tokenizer's chat template when it has one, else as plain text. Decoding is
greedy, so answers are reproducible. Requests run one at a time (``max_concurrency = 1``).

Enable it with a model path in the labeler's parameters or in the environment variable named by ``model_env``
(default ``DELTALENS_HF_MODEL``).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from .base import Completion, LabelerFatalError, LabelerUnavailable, LabelPrompt


class TransformersLabeler:
    kind = "transformers"
    max_concurrency = 1

    def __init__(self, name: str, model_path: str, *, max_new_tokens: int = 512, device: str = "cpu",
                 dtype: str = "auto", max_prompt_tokens: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name, self.model = name, str(model_path)
        self.max_new_tokens, self.device, self.max_prompt_tokens = max_new_tokens, device, max_prompt_tokens
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model, local_files_only=True)
            torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
            self.lm = AutoModelForCausalLM.from_pretrained(self.model, local_files_only=True, dtype=torch_dtype).to(device)
        except (OSError, ValueError) as e:
            raise LabelerUnavailable(
                f"labeler {name!r}: could not load model {self.model!r} from a local path or the local Hugging Face "
                f"cache (the hub is not reachable here; download it elsewhere and pass its directory): {e}") from e
        self.lm.eval()

    @classmethod
    def from_spec(cls, name: str, model: str | None = None, model_env: str = "DELTALENS_HF_MODEL", environ=None, **kw) -> "TransformersLabeler":
        env = os.environ if environ is None else environ
        path = model or env.get(model_env)
        if not path:
            raise LabelerUnavailable(f"labeler {name!r}: set {model_env} to a local model directory "
                                     f"(e.g. deepseek-coder-V2-lite or Qwen2.5-Coder) to enable it")
        looks_like_hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", str(path)) is not None
        if not Path(path).exists() and not looks_like_hub_id:
            raise LabelerUnavailable(f"labeler {name!r}: model path {path!r} does not exist")
        return cls(name, path, **kw)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "model": self.model, "max_new_tokens": self.max_new_tokens,
                "device": self.device}

    def _encode(self, prompt: LabelPrompt):
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(list(prompt.messages), add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)["input_ids"]
        else:
            ids = tok(prompt.text + "\n\nAnswer:\n", return_tensors="pt")["input_ids"]
        if self.max_prompt_tokens is not None and ids.shape[1] > self.max_prompt_tokens:
            raise LabelerFatalError(f"labeler {self.name!r}: prompt of sample {prompt.sample_id!r} has {ids.shape[1]} "
                                    f"tokens > max_prompt_tokens={self.max_prompt_tokens}")
        return ids.to(self.device)

    def complete(self, prompt: LabelPrompt) -> Completion:
        import torch

        ids = self._encode(prompt)
        start = time.perf_counter()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens,
                                   do_sample=False, pad_token_id=pad)
        new = out[0, ids.shape[1]:]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        finish = "stop" if len(new) < self.max_new_tokens else "length"
        return Completion(text=text, prompt_tokens=int(ids.shape[1]), completion_tokens=int(len(new)),
                          seconds=time.perf_counter() - start, finish_reason=finish)
