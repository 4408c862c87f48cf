"""Scoring on tiny random models: log-likelihoods equal a manual computation, batching changes nothing."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from portllm_edge.errors import EvaluationError  # noqa: E402
from portllm_edge.evaluation.scoring import (  # noqa: E402
    evaluate,
    extract_answer,
    generate_greedy,
    score_continuations,
)
from portllm_edge.evaluation.tasks import ChoiceExample, GenerationExample, load_task  # noqa: E402


@pytest.fixture(scope="module")
def llama(tiny_pairs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_pairs["llama"].old
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(
        path
    )


def _manual_logprob(model, tok, context: str, continuation: str) -> float:
    """Sum of log p(continuation token) in float64, in the harness's window (the last
    ``max_position_embeddings + 1`` tokens, all but the last one read)."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    n_cont = len(whole) - len(ctx)
    whole = whole[-(model.config.max_position_embeddings + 1) :]
    with torch.no_grad():
        logits = model(torch.tensor([whole[:-1]])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[t - 1, whole[t]] for t in range(len(whole) - n_cont, len(whole))))


REQUESTS = [
    ("The movie was great.\nAnswer:", " positive"),
    ("A much longer context sentence that goes on for a while.\nAnswer:", " negative"),
    ("Short:", " yes"),
    ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases."),
    ("Trailing space moves to the continuation: ", "no"),
]


def test_logprob_equals_manual_computation(llama):
    model, tok = llama
    scores, tokens = score_continuations(model, tok, REQUESTS, batch_size=3)
    for (ctx, cont), s in zip(REQUESTS, scores, strict=True):
        if ctx.endswith(" "):
            ctx, cont = ctx[:-1], " " + cont
        assert s.logprob == pytest.approx(_manual_logprob(model, tok, ctx, cont), rel=1e-5, abs=1e-4)
        assert s.n_tokens == len(cont.encode())  # byte-level test tokenizer: one token per byte
        assert s.logprob < 0
    # the model reads every token but the last of each request
    assert tokens == sum(len((c + x).encode()) - 1 for c, x in REQUESTS)


def test_one_token_choices_share_one_row(llama):
    model, tok = llama
    reqs = [("Pick:", "x"), ("Pick:", "y"), ("Other context:", "x"), ("Pick:", "xy")]
    scores, tokens = score_continuations(model, tok, reqs, batch_size=2)
    for (ctx, cont), s in zip(reqs, scores, strict=True):
        assert s.logprob == pytest.approx(_manual_logprob(model, tok, ctx, cont), rel=1e-5, abs=1e-4)
    # rows (the last token is never read): "Pick:" (shared by x and y), "Other context:", "Pick:"+"x"
    assert tokens == 5 + 14 + (5 + 1)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_batching_gives_the_same_scores(tiny_pairs, family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_pairs[family].old
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    one, _ = score_continuations(model, tok, REQUESTS, batch_size=1)
    four, _ = score_continuations(model, tok, REQUESTS, batch_size=4)
    for a, b in zip(one, four, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert (a.n_tokens, a.greedy) == (b.n_tokens, b.greedy)


def test_evaluate_classification_picks_argmax_and_is_batch_invariant(llama, shared_data):
    model, tok = llama
    data = load_task("sst2", shared_data / "sst2", limit=4, seed=1)
    r1 = evaluate(model, tok, data, batch_size=1, keep_predictions=True)
    r5 = evaluate(model, tok, data, batch_size=3, keep_predictions=True)
    assert r1.n == 4 and r1.task == "sst2" and r1.f1 is None
    assert [p.predicted for p in r1.predictions] == [p.predicted for p in r5.predictions]
    assert (r1.accuracy, r1.f1) == (r5.accuracy, r5.f1)
    for p, e in zip(r1.predictions, data.examples, strict=True):
        assert p.predicted == max(range(2), key=lambda j: p.scores[j])
        assert p.gold == e.gold and p.correct == (p.predicted == e.gold)
        expected = _manual_logprob(model, tok, e.prompt, " " + e.choices[1])
        assert p.scores[1] == pytest.approx(expected, rel=1e-5, abs=1e-4)
    assert r1.tokens > 0 and r1.tokens_per_s is not None and r1.seconds > 0


def test_mrpc_reports_f1(llama, shared_data):
    model, tok = llama
    data = load_task("mrpc", shared_data / "mrpc", limit=4, seed=1)
    r = evaluate(model, tok, data, batch_size=4, keep_predictions=True)
    preds = [p.predicted for p in r.predictions]
    golds = [e.gold for e in data.examples]
    tp = sum(p == g == 1 for p, g in zip(preds, golds, strict=True))
    fp_fn = sum(p != g for p, g in zip(preds, golds, strict=True))
    assert r.f1 == pytest.approx(0.0 if tp == 0 else 2 * tp / (2 * tp + fp_fn))


def test_long_context_is_truncated_on_the_left(llama):
    model, tok = llama
    window = model.config.max_position_embeddings  # 256 byte tokens
    context = "".join(f"word{i} " for i in range(80)) + "Answer:"
    assert len(context) > window
    (score,), tokens = score_continuations(model, tok, [(context, " yes")])
    # as the harness: keep the last window + 1 tokens, the model reads all but the last
    ids = tok(context + " yes", add_special_tokens=False)["input_ids"][-(window + 1) :]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids[:-1]])).logits[0].double(), dim=-1)
    expected = float(sum(logp[t - 1, ids[t]] for t in range(window + 1 - 4, window + 1)))
    assert tokens == window
    assert score.logprob == pytest.approx(expected, rel=1e-5, abs=1e-4)


def test_normalization_divides_by_tokens_characters_or_bytes(llama):
    model, tok = llama
    ex = [ChoiceExample("t", "0", "Pick:", ("a", "bbbbbbbb", "é"), 0)]
    raw = evaluate(model, tok, ex, keep_predictions=True).predictions[0].scores
    per_tok = evaluate(model, tok, ex, normalization="tokens", keep_predictions=True).predictions[0].scores
    assert per_tok[0] == pytest.approx(raw[0] / 2)  # " a" is 2 byte tokens
    assert per_tok[1] == pytest.approx(raw[1] / 9)
    # the harness's acc_norm / acc_bytes: the choice string's length, without the " " delimiter
    chars = evaluate(model, tok, ex, normalization="chars", keep_predictions=True)
    assert chars.predictions[0].scores == pytest.approx((raw[0] / 1, raw[1] / 8, raw[2] / 1))
    per_byte = evaluate(model, tok, ex, normalization="bytes", keep_predictions=True).predictions[0].scores
    assert per_byte == pytest.approx((raw[0] / 1, raw[1] / 8, raw[2] / 2))  # "é" is 2 UTF-8 bytes
    best_norm = max(range(3), key=lambda j: chars.predictions[0].scores[j])
    assert chars.predictions[0].predicted == chars.predictions[0].predicted_norm == best_norm
    assert chars.acc_norm == float(best_norm == 0)


def test_winogrande_partial_scoring_scores_the_shared_continuation(llama, shared_data):
    model, tok = llama
    data = load_task("winogrande", shared_data / "winogrande", limit=2)
    r = evaluate(model, tok, data, batch_size=4, keep_predictions=True)
    e, p = data.examples[0], r.predictions[0]
    for j, (ctx, cont) in enumerate(e.requests()):
        assert ctx.endswith(e.choices[j])
        assert p.scores[j] == pytest.approx(_manual_logprob(model, tok, ctx, cont), rel=1e-5, abs=1e-4)


def test_peft_model_is_scored_and_differs_from_base(tiny_pairs, tiny_adapters, llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, tok = llama
    base_scores, _ = score_continuations(model, tok, REQUESTS[:2])
    fresh = AutoModelForCausalLM.from_pretrained(tiny_pairs["llama"].old, dtype=torch.float32)
    patched = PeftModel.from_pretrained(fresh, tiny_adapters["llama"])
    one, _ = score_continuations(patched, tok, REQUESTS[:2], batch_size=1)
    two, _ = score_continuations(patched, tok, REQUESTS[:2], batch_size=2)
    assert one[0].logprob != pytest.approx(base_scores[0].logprob, abs=1e-3)
    assert [s.logprob for s in one] == pytest.approx([s.logprob for s in two], abs=1e-4)


def test_generate_greedy_matches_a_manual_argmax_loop(llama):
    model, tok = llama
    prompts = ["Question: 1+1?\nAnswer:", "Question: a much longer question here?\nAnswer:"]
    outs_b2, tokens = generate_greedy(model, tok, prompts, max_new_tokens=6, batch_size=2, stop=())
    outs_b1, _ = generate_greedy(model, tok, prompts, max_new_tokens=6, batch_size=1, stop=())
    assert outs_b1 == outs_b2
    ids = tok(prompts[0], add_special_tokens=False)["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(6):
            nxt = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            new.append(nxt)
            if nxt == tok.eos_token_id:
                break
    assert outs_b2[0] == tok.decode(new, skip_special_tokens=True).strip()
    assert tokens >= sum(len(p.encode()) for p in prompts)


def test_gsm8k_evaluate_records_outputs(llama):
    model, tok = llama
    ex = [GenerationExample("gsm8k", "0", "Question: 2+2?\nAnswer:", "4", "2+2=4\n#### 4")]
    r = evaluate(model, tok, ex, max_new_tokens=4, keep_predictions=True)
    assert r.n == 1 and r.options["max_new_tokens"] == 4
    p = r.predictions[0]
    assert p.output is not None and p.gold == "4"
    assert p.correct == (p.predicted is not None and float(p.predicted) == 4.0)


@pytest.mark.parametrize(
    ("output", "answer"),
    [
        ("She earns 9*2 = 18 dollars.\n#### 18", "18"),
        ("so 3 + 4 = 7. The answer is 1,007.", "1,007."),  # the harness's flexible-extract token
        ("I don't know", None),
    ],
)
def test_extract_answer(output, answer):
    assert extract_answer(output) == answer


def test_bad_batch_size(llama):
    model, tok = llama
    with pytest.raises(EvaluationError, match="`batch_size` must be at least 1"):
        score_continuations(model, tok, REQUESTS, batch_size=0)


def test_progress_counts_examples_not_scored_choices(llama):
    """Two choices per example: the callback counts examples (3 of 3), not continuations (6)."""
    model, tok = llama
    examples = [
        ChoiceExample("t", str(i), f"Example {i} is", (" good", " bad"), i % 2, ("good", "bad"))
        for i in range(3)
    ]
    # Multi-token choices keep one request per choice: 6 scored continuations in 3 batches of 2.
    calls: list[tuple[int, int]] = []
    evaluate(model, tok, examples, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_the_output_head_gets_a_contiguous_input_while_scoring_and_no_hook_is_left(tiny_pairs, tiny_adapters):
    """logits_to_keep hands lm_head a strided view; a frozen bf16 head on CPU then copied its weight
    once per batch row (432 MiB for SmolLM2-135M at batch 8). Scoring hands it a contiguous copy."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_pairs["llama"].old
    tok = AutoTokenizer.from_pretrained(path)
    patched = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), tiny_adapters["llama"]
    )
    head = patched.get_output_embeddings()
    seen: list[tuple[bool, tuple[int, ...]]] = []
    spy = head.register_forward_hook(
        lambda _m, args, _out: seen.append((args[0].is_contiguous(), args[0].shape))
    )
    try:
        scores, _ = score_continuations(patched, tok, REQUESTS[:4], batch_size=4)
    finally:
        spy.remove()
    assert seen and all(contiguous for contiguous, _shape in seen)
    assert not head._forward_pre_hooks  # the hook lives only while scoring
    with torch.inference_mode():
        ids = tok("a b c d", return_tensors="pt").input_ids.repeat(2, 1)
        view = patched(input_ids=ids, logits_to_keep=1)  # outside scoring: transformers' strided view
    assert view.logits.shape[1] == 1 and len(scores) == 4
