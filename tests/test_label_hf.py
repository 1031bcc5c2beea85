"""The transformers labeler on a tiny random-weight model with a tokenizer trained here (the code path, not the
quality): chat template, greedy decoding, token counts, the answer store, and the 'not configured' errors."""

import pytest
import torch

from deltalens.labeling.base import LabelerUnavailable
from deltalens.labeling.hf_local import TransformersLabeler
from deltalens.labeling.run import answer_stats, label_prompts
from deltalens.labeling.store import AnswerStore
from deltalens.labeling.templates import build_prompt

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-lm")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["def f(x):\n    return x + 1\n", "Chunk 1 relevant true false {\"chunks\": [{\"id\": 1}]}"] * 50
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    fast.chat_template = CHAT
    fast.save_pretrained(d)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                      eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


def _sample(n_chunks=3):
    return {"sample_id": "p:a.py:3", "path": "a.py", "prefix": "import b\n\nx = b.", "chunks": [
        {"chunk_index": i, "path": f"b{i}.py", "text": f"def g{i}():\n    return {i}\n"} for i in range(n_chunks)]}


def test_transformers_labeler_generates_with_chat_template(tiny_model_dir, tmp_path):
    lab = TransformersLabeler.from_spec("tiny", model=str(tiny_model_dir), max_new_tokens=12)
    assert lab.kind == "transformers" and lab.max_concurrency == 1
    prompt = build_prompt(_sample())
    expected_ids = lab.tokenizer.apply_chat_template(list(prompt.messages), add_generation_prompt=True,
                                                     return_dict=True)["input_ids"]
    assert lab.tokenizer.decode(expected_ids).startswith("<|system|>")
    first = lab.complete(prompt)
    assert first.prompt_tokens == len(expected_ids)
    assert 1 <= first.completion_tokens <= 12 and first.seconds > 0
    assert first.finish_reason in ("stop", "length")
    assert lab.complete(prompt).text == first.text  # greedy: reproducible

    store = AnswerStore(tmp_path / "answers.jsonl")
    prompts = [prompt, build_prompt(_sample(4))]
    rep = label_prompts(lab, prompts, store, progress=False)
    assert (rep.answered, rep.cached, rep.failed, rep.fatal) == (2, 0, [], None)
    assert label_prompts(lab, prompts, store, progress=False).cached == 2
    stats = answer_stats(prompts, store, "tiny", lab.model)
    # a random model does not answer in the format: its answers are counted, not dropped
    assert len(stats) == 2 and set(stats["status"]) <= {"malformed", "partial", "empty", "ok"}
    assert (stats["prompt_tokens"] > 0).all()


def test_transformers_labeler_not_configured(tmp_path):
    with pytest.raises(LabelerUnavailable, match="set DELTALENS_HF_MODEL"):
        TransformersLabeler.from_spec("local-hf", environ={})
    with pytest.raises(LabelerUnavailable, match="does not exist"):
        TransformersLabeler.from_spec("local-hf", model=str(tmp_path / "nope"))
    with pytest.raises(LabelerUnavailable, match="could not load model"):
        TransformersLabeler.from_spec("local-hf", model=str(tmp_path))  # exists, holds no model
