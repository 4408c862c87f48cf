"""Training's target tokens are the tokens evaluation scores, with a real SentencePiece tokenizer.

A tiny SentencePiece BPE model is trained here with the ``sentencepiece`` trainer, the
way Llama-2's was set up (identity normalization, whitespace kept, a dummy prefix
space, byte fallback), and wrapped in ``transformers`` with Llama-2's own
``tokenizer.json`` layout (normalizer: prepend "▁", replace " " by "▁"; no
pre-tokenizer; BOS added). With it, ``" positive"`` encoded alone is
``["▁", "▁p", ...]`` while inside ``"Answer: positive"`` it is ``["▁p", ...]``: the
defect of encoding prompt and completion separately.
"""

from __future__ import annotations

import io

import pytest

torch = pytest.importorskip("torch")
spm = pytest.importorskip("sentencepiece")

from portllm_edge.evaluation.scoring import score_continuations  # noqa: E402
from portllm_edge.training.batches import IGNORE_INDEX, collate, encode_pairs  # noqa: E402

_WORDS = (
    "it 's a charming and often affecting journey . the movie was great , the acting was bad . "
    "question : is this sentence positive or negative ? answer : positive negative yes no true false "
    "Sarah was a much better surgeon than Maria so always got the easier cases . "
    "Natalia sold clips to 48 of her friends in April , and then she sold half as many in May . "
    "Question: Answer: Is this True or False ? 0123456789 + = ' \" ( ) ! "
).split(" ")


def _corpus() -> list[str]:
    import random

    rnd = random.Random(0)
    lines = [" ".join(rnd.choice(_WORDS) for _ in range(12)) for _ in range(400)]
    return [
        *lines,
        "Answer: positive",
        "Answer: negative",
        "Question: Is this sentence positive or negative?",
    ]


@pytest.fixture(scope="module")
def llama2_style_tokenizer(tmp_path_factory):
    from tokenizers import normalizers
    from transformers import LlamaTokenizer, PreTrainedTokenizerFast

    pytest.importorskip("google.protobuf", reason="transformers reads a .model file with protobuf")
    folder = tmp_path_factory.mktemp("sp-tokenizer")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=buf,
        vocab_size=420,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    backend = LlamaTokenizer.from_pretrained(folder).backend_tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None
    from tokenizers import processors

    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


PAIRS = [
    ("it 's a charming journey . \nQuestion: Is this sentence positive or negative?\nAnswer:", " positive"),
    ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases."),
    ("Question: Natalia sold 48 clips.\nAnswer: ", "48"),
]


def test_the_tokenizer_has_the_prefix_space_defect(llama2_style_tokenizer):
    tok = llama2_style_tokenizer
    alone = tok.convert_ids_to_tokens(tok(" positive", add_special_tokens=False)["input_ids"])
    ctx = tok("Answer:", add_special_tokens=False)["input_ids"]
    whole = tok("Answer: positive", add_special_tokens=False)["input_ids"]
    tail = tok.convert_ids_to_tokens(whole[len(ctx) :])
    assert alone[0] == "▁" and alone[1:] == tail  # an extra "▁" token when encoded alone
    assert tok("a")["input_ids"][0] == tok.bos_token_id


def test_training_targets_are_the_scored_tokens(llama2_style_tokenizer):
    tok = llama2_style_tokenizer
    encoded = encode_pairs(tok, PAIRS, max_length=256)
    for (ids, labels), (context, continuation) in zip(encoded, PAIRS, strict=True):
        target = [t for t in labels if t != IGNORE_INDEX]
        assert target[-1] == tok.eos_token_id
        # what evaluation scores: the tail of the joint encoding (context's trailing spaces moved over)
        ctx_text = context.rstrip()
        cont_text = context[len(ctx_text) :] + continuation
        whole = tok(ctx_text + cont_text, add_special_tokens=False)["input_ids"]
        n_ctx = len(tok(ctx_text, add_special_tokens=False)["input_ids"])
        assert target[:-1] == whole[n_ctx:]
        assert ids == [tok.bos_token_id, *whole, tok.eos_token_id]
    alone = tok(PAIRS[0][1], add_special_tokens=False)["input_ids"]
    first_target = [t for t in encoded[0][1] if t != IGNORE_INDEX][:-1]
    assert alone != first_target  # the old separate encoding would have trained on other tokens


def test_training_loss_equals_the_scored_log_likelihood(llama2_style_tokenizer):
    """The summed training NLL over target tokens (EOS left out) is minus the scorer's log-likelihood."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = llama2_style_tokenizer
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(cfg).eval()
    scores, _ = score_continuations(model, tok, PAIRS, batch_size=2)
    for (ids, labels), score in zip(encode_pairs(tok, PAIRS, max_length=256), scores, strict=True):
        batch = collate([(ids[:-1], labels[:-1])], pad_id=0)  # drop EOS: the scorer never scores it
        n_target = sum(t != IGNORE_INDEX for t in labels[:-1])
        assert score.n_tokens == n_target
        with torch.no_grad():
            loss = model(**batch).loss.double()
        assert float(loss) * n_target == pytest.approx(-score.logprob, rel=1e-5)
