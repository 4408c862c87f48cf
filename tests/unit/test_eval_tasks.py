"""Task loaders on real rows from ../shared/data, plus format errors, test splits and subsampling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portllm_edge.errors import ConfigError, DataError
from portllm_edge.evaluation.tasks import (
    ChoiceExample,
    GenerationExample,
    LoadOptions,
    format_training_text,
    get_task,
    list_tasks,
    load_task,
    parse_verbalizers,
)


def _golds(data) -> dict[int, int]:
    counts: dict[int, int] = {}
    for e in data.examples:
        counts[e.gold] = counts.get(e.gold, 0) + 1
    return counts


def test_registry_names_and_aliases():
    names = [t.name for t in list_tasks()]
    assert names[:7] == ["boolq", "sst2", "mrpc", "rte", "wnli", "winogrande", "gsm8k"]
    assert get_task("SST-2").name == "sst2"
    assert get_task("custom").name == "jsonl"
    with pytest.raises(ConfigError) as err:
        get_task("boolqq")
    assert "unknown task `boolqq`" in err.value.message
    assert "Did you mean `boolq`?" in err.value.hint


def test_boolq_string_labels(shared_data):
    data = load_task("boolq", shared_data / "boolq")
    assert data.path.name == "val.jsonl" and data.total == 3270
    assert _golds(data) == {0: 1237, 1: 2033}
    first = data.examples[0]
    assert isinstance(first, ChoiceExample)
    assert first.id == "0" and first.gold == 0  # label "false"
    assert first.choices == ("no", "yes")
    assert first.prompt.startswith("Ethanol fuel -- All biomass goes through")
    assert first.prompt.endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")


def test_boolq_boolean_labels(tmp_path):
    f = tmp_path / "val.jsonl"
    rows = [
        {"question": "is it", "passage": "P -- text", "idx": 0, "label": True},
        {"question": "is it not", "passage": "P -- text", "idx": 1, "label": False},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_task("boolq", f)
    assert [e.gold for e in data.examples] == [1, 0]


def test_sst2_dev(shared_data):
    data = load_task("sst2", shared_data / "sst2" / "dev.tsv")
    assert data.total == 872 and _golds(data) == {0: 428, 1: 444}
    e = data.examples[0]
    # the GLUE sentence keeps its trailing space, as in lm-eval's glue/sst2 prompt
    assert (
        e.prompt
        == "it 's a charming and often affecting journey . \nQuestion: Is this sentence positive or negative?\nAnswer:"
    )
    assert e.choices == ("negative", "positive") and e.gold == 1
    assert format_training_text(e) == e.prompt + " positive"


def test_mrpc_bom_and_unbalanced_quote(shared_data):
    data = load_task("mrpc", shared_data / "mrpc")
    assert data.total == 408 and _golds(data) == {0: 129, 1: 279}
    e = data.examples[0]
    # the BOM is not part of the first column name, and the unclosed quote stays literal (QUOTE_NONE)
    assert 'Sentence 2: "The foodservice pie business does not fit our long-term growth strategy.' in e.prompt
    assert "Sentence 1: He said the foodservice pie business doesn't fit" in e.prompt
    assert e.gold == 1 and e.choices == ("no", "yes")
    assert data.task.metrics == ("accuracy", "f1") and data.task.positive_index == 1


def test_rte_tsv_and_jsonl_agree(shared_data):
    tsv = load_task("rte", shared_data / "rte" / "dev.tsv")
    jsonl = load_task("rte", shared_data / "rte" / "val.jsonl")
    assert tsv.total == jsonl.total == 277
    assert _golds(tsv) == {0: 146, 1: 131}
    assert [e.gold for e in tsv.examples] == [e.gold for e in jsonl.examples]
    e = tsv.examples[0]
    assert e.prompt.endswith("\nQuestion: Christopher Reeve had an accident. True or False?\nAnswer:")
    assert e.choices[e.gold] == "False" and e.label_names[e.gold] == "not_entailment"


def test_wnli(shared_data):
    data = load_task("wnli", shared_data / "wnli")
    assert data.total == 71 and _golds(data) == {0: 40, 1: 31}
    e = data.examples[1]
    assert (
        e.prompt
        == "Jane knocked on Susan's door but she did not answer.\nQuestion: Susan did not answer. True or False?\nAnswer:"
    )
    assert e.choices[e.gold] == "True"


def test_winogrande_partial_requests(shared_data):
    data = load_task("winogrande", shared_data / "winogrande")
    assert data.total == 1267 and _golds(data) == {0: 628, 1: 639}
    e = data.examples[0]
    assert e.id == "3FCO4VKOZ4BJQ6IFC0VAIBK4KTWE7U-2" and e.choices == ("Sarah", "Maria") and e.gold == 1
    assert e.requests() == (
        ("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
        ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases."),
    )
    assert (
        format_training_text(e)
        == "Sarah was a much better surgeon than Maria so Maria always got the easier cases."
    )


def test_gsm8k(shared_data):
    data = load_task("gsm8k", shared_data / "gsm8k")
    assert data.path.name == "test.jsonl" and data.total == 1319
    e = data.examples[0]
    assert isinstance(e, GenerationExample)
    assert e.answer == "18"
    assert e.prompt.startswith("Question: Janet’s ducks lay 16 eggs per day.") and e.prompt.endswith(
        "\nAnswer:"
    )
    assert format_training_text(e).endswith("#### 18")


def test_limit_is_a_seeded_subsample_in_file_order(shared_data):
    a = load_task("sst2", shared_data / "sst2", limit=20, seed=3)
    b = load_task("sst2", shared_data / "sst2", limit=20, seed=3)
    c = load_task("sst2", shared_data / "sst2", limit=20, seed=4)
    ids = [int(e.id) for e in a.examples]
    assert len(ids) == 20 and ids == sorted(ids)
    assert ids == [int(e.id) for e in b.examples]
    assert ids != [int(e.id) for e in c.examples]
    assert len(load_task("wnli", shared_data / "wnli", limit=1000).examples) == 71
    with pytest.raises(ConfigError, match="at least 1"):
        load_task("wnli", shared_data / "wnli", limit=0)


def test_glue_test_split_is_refused(tmp_path):
    f = tmp_path / "test.tsv"
    f.write_text("index\tsentence\n0\tuneasy mishmash of styles and genres .\n")
    with pytest.raises(DataError) as err:
        load_task("sst2", f)
    assert "no `label` column" in err.value.message and "test split" in err.value.message
    assert str(f) in err.value.message
    assert "dev.tsv" in err.value.hint


def test_jsonl_test_split_is_refused(tmp_path):
    f = tmp_path / "test.jsonl"
    f.write_text(json.dumps({"question": "q", "passage": "p", "idx": 0}) + "\n")
    with pytest.raises(DataError, match="no `label` field in any record"):
        load_task("boolq", f)


def test_wrong_columns_name_file_found_and_expected(shared_data):
    with pytest.raises(DataError) as err:
        load_task("mrpc", shared_data / "rte" / "dev.tsv")
    msg = err.value.message
    assert str(shared_data / "rte" / "dev.tsv") in msg
    assert "['index', 'sentence1', 'sentence2', 'label']" in msg
    assert "'#1 String'" in msg and "'Quality'" in msg


def test_wrong_label_value_names_line(tmp_path):
    f = tmp_path / "dev.tsv"
    f.write_text("sentence\tlabel\ngood .\t1\nbad .\tneg\n")
    with pytest.raises(DataError, match=r"line 3 has label 'neg'; expected one of \['0', '1'\]"):
        load_task("sst2", f)


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_task("sst2", tmp_path / "nope.tsv")
    with pytest.raises(DataError, match=r"holds none of the SST-2 files dev\.tsv, train\.tsv"):
        load_task("sst2", tmp_path)


def test_custom_jsonl_with_template_and_verbalizers(tmp_path):
    f = tmp_path / "mine.jsonl"
    rows = [
        {"text": "great phone", "label": 1, "source": "web"},
        {"text": "broke in a day", "label": 0, "source": "app"},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    plain = load_task("jsonl", f)
    assert plain.examples[0].choices == ("0", "1") and [e.gold for e in plain.examples] == [1, 0]
    assert plain.examples[0].prompt == "great phone\nAnswer:"
    opts = LoadOptions(
        template="[{source}] Review: {text}\nSentiment:",
        verbalizers=parse_verbalizers(["0=negative", "1=positive"]),
    )
    data = load_task("custom", f, options=opts)
    e = data.examples[1]
    assert e.prompt == "[app] Review: broke in a day\nSentiment:"
    assert e.choices == ("negative", "positive") and e.gold == 0
    assert format_training_text(e) == "[app] Review: broke in a day\nSentiment: negative"
    with pytest.raises(DataError, match="uses field 'title'"):
        load_task("jsonl", f, options=LoadOptions(template="{title}: {text}"))
    with pytest.raises(ConfigError, match="not LABEL=WORD"):
        parse_verbalizers(["positive"])


def test_custom_jsonl_missing_text_field(tmp_path: Path):
    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"sentence": "x", "label": 1}) + "\n")
    with pytest.raises(
        DataError, match=r"has fields \['label', 'sentence'\]; the custom task expects \['text', 'label'\]"
    ):
        load_task("jsonl", f)


def test_gsm8k_few_shot_default_and_options(shared_data):
    from portllm_edge.errors import ConfigError, DataError

    five = load_task("gsm8k", shared_data / "gsm8k" / "test.jsonl", limit=3)
    assert five.num_fewshot == 5 and five.fewshot_path == (shared_data / "gsm8k" / "train.jsonl").resolve()
    e = five.examples[0]
    shots = e.fewshot.split("\n\n")[:-1]
    assert len(shots) == 5 and all(
        s.startswith("Question: ") and "\nAnswer: " in s and "#### " in s for s in shots
    )
    assert e.context == e.fewshot + e.prompt and format_training_text(e) == e.prompt + " " + e.solution
    zero = load_task("gsm8k", shared_data / "gsm8k" / "test.jsonl", limit=3, num_fewshot=0)
    assert zero.examples[0].context == zero.examples[0].prompt == e.prompt
    # the train split as its own few-shot pool: an example is never its own shot
    own = load_task("gsm8k", shared_data / "gsm8k" / "train.jsonl", limit=20, num_fewshot=2)
    assert all(x.prompt not in x.fewshot for x in own.examples)
    with pytest.raises(ConfigError, match="applies to generation tasks"):
        load_task("sst2", shared_data / "sst2", num_fewshot=2)
    with pytest.raises(ConfigError, match="must be 0 or more"):
        load_task("gsm8k", shared_data / "gsm8k", num_fewshot=-1)
    with pytest.raises(DataError, match="few-shot file"):
        load_task("gsm8k", shared_data / "gsm8k", fewshot_data=shared_data / "nope.jsonl")
