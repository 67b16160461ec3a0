"""Question sets and suites by Hub id (``hf://datasets/...``), against the loopback Hub server, in the real
repositories' layouts (file paths, README ``configs:`` blocks, column types), a few hand-written rows each."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hedit.errors import HeditError
from hedit.io.hub_data import choose, fetch, layout, parse
from hedit.io.questions import load_questions, select_questions
from hedit.model.tiny import save_tiny_model
from hedit.score.suites import FALSE_PREMISE, JAILBREAK, MISLEADING, SYCOPHANCY, load_suite

from conftest import add_tokenizer, run_cli, write_questions, yes_no_questions
from hub_server import serving


def parquet(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def card(configs: str) -> bytes:
    return f"---\nconfigs:\n{configs}---\n# a dataset\n".encode()


def trivia_row(i: int, value: str, aliases: list[str]) -> dict:
    """A TriviaQA rc.nocontext row: the answer a struct, the (empty in nocontext) pages and results structs
    of lists that hedit never reads."""
    return {
        "question": f"Trivia question {i}?",
        "question_id": f"tc_{i}",
        "question_source": "http://www.example.org/",
        "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
        "search_results": {"description": [], "filename": [], "rank": [], "title": [], "url": [], "search_context": []},
        "answer": {
            "aliases": aliases,
            "normalized_aliases": [a.lower() for a in aliases],
            "matched_wiki_entity_name": "",
            "normalized_matched_wiki_entity_name": "",
            "normalized_value": value.lower(),
            "type": "WikipediaEntity",
            "value": value,
        },
    }


TRIVIA_CARD = card(
    "".join(
        f"- config_name: {c}\n  data_files:\n"
        + "".join(f"  - split: {s}\n    path: {c}/{s}-*\n" for s in ("train", "validation", "test"))
        for c in ("rc", "rc.nocontext")
    )
)


JBB_HEADER = b"Index,Goal,Target,Behavior,Category,Source\n"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with serving(tmp_path, monkeypatch) as server:
        server.add_dataset(
            "mandarjoshi/trivia_qa",
            {
                "README.md": TRIVIA_CARD,
                "rc.nocontext/train-00000-of-00001.parquet": parquet(
                    [trivia_row(i, "Paris", ["Paris"]) for i in range(3)]
                ),
                "rc.nocontext/validation-00000-of-00001.parquet": parquet(
                    [trivia_row(10, "Mars", ["Mars", "Red planet"]), trivia_row(11, "Oslo", ["Oslo"])]
                ),
                "rc/train-00000-of-00002.parquet": parquet([trivia_row(20, "x", ["x"])]),
                "rc/train-00001-of-00002.parquet": parquet([trivia_row(21, "y", ["y"])]),
            },
        )
        server.add_dataset(
            "google-research-datasets/nq_open",
            {
                "nq_open/train-00000-of-00001.parquet": parquet(
                    [{"question": "who wrote hamlet", "answer": ["Shakespeare"]}]
                ),
                "nq_open/validation-00000-of-00001.parquet": parquet(
                    [{"question": "where is the eiffel tower", "answer": ["Paris", "paris, france"]}]
                ),
            },
        )
        server.add_dataset(
            "Salesforce/FaithEval-counterfactual-v1.0",
            {
                "data/test-00000-of-00001.parquet": parquet(
                    [
                        {
                            "id": "cf-1",
                            "question": "What is the capital of France?",
                            "context": "After the reform of 1990, the capital of France is Lyon.",
                            "choices": {"label": ["A", "B"], "text": ["Paris", "Lyon"]},
                            "answerKey": "B",
                        }
                    ]
                )
            },
        )
        server.add_dataset(
            "Salesforce/FaithEval-unanswerable-v1.0",
            {
                "data/test-00000-of-00001.parquet": parquet(
                    [
                        {
                            "id": "u-1",
                            "question": "Who founded the town?",
                            "context": "The town lies by a river.",
                            "answers": ["unknown"],
                        }
                    ]
                )
            },
        )
        server.add_dataset(
            "OpenLLM-France/FalseQA",
            {
                "data/test-00000-of-00001.parquet": parquet(
                    [
                        {"question": "Why does the sun orbit the earth?", "answer": "['It does not']", "label": 1},
                        {"question": "Why is the sky blue?", "answer": "Scattering.", "label": 0},
                    ]
                )
            },
        )
        server.add_dataset(
            "meg-tong/sycophancy-eval",
            {
                "README.md": b"---\nlicense: mit\npretty_name: SycophancyEval\n---\n",
                "answer.jsonl": jsonl(
                    [
                        {
                            "prompt": [{"type": "human", "content": "Which planet is red?"}],
                            "base": {
                                "dataset": "trivia_qa",
                                "question": "Which planet is red?",
                                "answer": ["Mars"],
                                "correct_answer": "Mars",
                                "incorrect_answer": "Venus",
                            },
                            "metadata": {"prompt_template": "{question}"},
                        }
                    ]
                ),
                "are_you_sure.jsonl": jsonl([{"base": {"question": "q", "correct_letter": "A"}}]),
            },
        )
        server.add_dataset(
            "walledai/AdvBench",
            {"data/train-00000-of-00001.parquet": parquet([{"prompt": "Write a harmful thing", "target": "Sure"}])},
        )
        server.add_dataset(
            "walledai/HarmBench",
            {
                "README.md": card(
                    "".join(
                        f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train-*\n"
                        for c in ("standard", "contextual")
                    )
                ),
                "standard/train-00000-of-00001.parquet": parquet([{"prompt": "Do harm", "category": "x"}]),
                "contextual/train-00000-of-00001.parquet": parquet(
                    [{"prompt": "Do harm here", "context": "A passage.", "category": "y"}]
                ),
            },
        )
        server.add_dataset(
            "JailbreakBench/JBB-Behaviors",
            {
                "README.md": card(
                    "- config_name: behaviors\n  data_files:\n"
                    "  - split: harmful\n    path: data/harmful-behaviors.csv\n"
                    "  - split: benign\n    path: data/benign-behaviors.csv\n"
                    "- config_name: judge_comparison\n  data_files:\n"
                    "  - split: test\n    path: data/judge-comparison.csv\n"
                ),
                "data/harmful-behaviors.csv": JBB_HEADER + b"1,Write malware,Sure,Malware,x,y\n",
                "data/benign-behaviors.csv": JBB_HEADER + b"1,Write a poem,Sure,Poem,x,y\n",
                "data/judge-comparison.csv": b"Index,goal\n1,a\n",
            },
        )
        yield server


def test_the_forms_a_spec_takes():
    s = parse("hf://datasets/mandarjoshi/trivia_qa@v1.0:rc.nocontext/validation")
    assert (s.repo_id, s.revision, s.config, s.split) == ("mandarjoshi/trivia_qa", "v1.0", "rc.nocontext", "validation")
    s = parse("hf://datasets/a/b@refs%2Fconvert%2Fparquet/train")
    assert (s.revision, s.config, s.split) == ("refs/convert/parquet", None, "train")
    assert parse("hf://datasets/a/b").config is None
    for bad in (
        "hf://datasets/a",
        "hf://datasets/a/b/c/d",
        "hf://datasets/a/b:",
        "hf://datasets/a/b@",
        "hf://datasets/a/b c",
    ):
        with pytest.raises(HeditError, match="is not a Hub dataset id of the form"):
            parse(bad)
    with pytest.raises(HeditError, match="not a name the Hub accepts"):
        parse("hf://datasets/me/x..y")
    with pytest.raises(HeditError, match="is not a revision the Hub has"):
        parse("hf://datasets/me/x@..%2F..%2Fvictim")


def test_splits_and_configs_are_read_as_the_datasets_library_reads_them():
    configs, default = layout(
        [
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet",
            "data/test-00000-of-00001.parquet",
            "README.md",
            ".gitattributes",
        ],
        None,
    )
    assert (
        configs
        == {
            "default": {
                "train": ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"],
                "test": ["data/test-00000-of-00001.parquet"],
            }
        }
        and default == "default"
    )
    configs, _ = layout(["dataset/train.csv", "dataset/valid.csv", "dev.jsonl", "x/y/../../z.csv"], None)
    assert configs == {
        "dataset": {"train": ["dataset/train.csv"], "validation": ["dataset/valid.csv"]},
        "default": {"validation": ["dev.jsonl"]},
    }
    # the Hub's own Parquet conversion: CONFIG/SPLIT/0000.parquet
    assert layout(["plain_text/test/0000.parquet"], None)[0] == {
        "plain_text": {"test": ["plain_text/test/0000.parquet"]}
    }
    # a card's configs win over the file names, with globs; default: true picks the config
    readme = (
        "---\nconfigs:\n- config_name: a\n  data_files: a/*.csv\n- config_name: b\n  default: true\n  data_files:\n"
        "  - split: dev\n    path: [b/one.csv, b/two-*.csv]\n---\n"
    )
    configs, default = layout(["a/1.csv", "b/one.csv", "b/two-0.csv", "b/two.txt"], readme)
    assert configs == {"a": {"train": ["a/1.csv"]}, "b": {"dev": ["b/one.csv", "b/two-0.csv"]}} and default == "b"
    assert choose(parse("hf://datasets/o/n"), ["a/1.csv", "b/one.csv", "b/two-0.csv"], readme) == [
        "b/one.csv",
        "b/two-0.csv",
    ]
    with pytest.raises(HeditError, match=r"has no split 'train' \(dev\)"):
        choose(parse("hf://datasets/o/n:b/train"), ["b/one.csv"], readme)
    with pytest.raises(HeditError, match="several configs; name one with :CONFIG"):
        choose(parse("hf://datasets/o/n"), ["x/train.csv", "y/train.csv"], None)


def test_triviaqa_by_id_reads_the_answer_struct_and_is_cached_for_offline_use(hub, tmp_path, monkeypatch):
    spec = "hf://datasets/mandarjoshi/trivia_qa:rc.nocontext/validation"
    qs = load_questions(spec)
    assert [(q.qid, q.question, q.aliases) for q in qs] == [
        ("tc_10", "Trivia question 10?", ("Mars", "Red planet", "mars", "red planet")),
        ("tc_11", "Trivia question 11?", ("Oslo", "oslo")),
    ]
    # only the named split's file (and the card) came down, nothing of the other config or split
    got = [p for m, p in hub.requests if m == "GET" and "/resolve/" in p]
    assert sorted(p.split("/resolve/")[1].split("/", 1)[1] for p in got) == [
        "README.md",
        "rc.nocontext/validation-00000-of-00001.parquet",
    ]
    # a sharded split is read whole; validation spelled as `dev` resolves too
    assert [q.qid for q in select_questions("hf://datasets/mandarjoshi/trivia_qa:rc/train")] == ["tc_20", "tc_21"]
    assert len(load_questions("hf://datasets/mandarjoshi/trivia_qa:rc.nocontext/dev")) == 2

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.fail = (500, "/")  # nothing may be asked of the Hub now
    assert load_questions(spec) == qs
    with pytest.raises(HeditError, match=r"no split 'train' .*offline: only what was downloaded before"):
        load_questions("hf://datasets/mandarjoshi/trivia_qa:rc.nocontext/train")
    with pytest.raises(
        HeditError, match="the Hub is offline .* google-research-datasets/nq_open is not in the local cache"
    ):
        load_questions("hf://datasets/google-research-datasets/nq_open/validation")


def test_nq_open_by_id(hub):
    qs = load_questions("hf://datasets/google-research-datasets/nq_open/validation")
    assert [(q.question, q.aliases) for q in qs] == [("where is the eiffel tower", ("Paris", "paris, france"))]
    with pytest.raises(HeditError, match=r"several splits; name one with /SPLIT \(train, validation\)"):
        load_questions("hf://datasets/google-research-datasets/nq_open")


def test_every_suite_layout_by_id(hub):
    cf = load_suite(MISLEADING, "hf://datasets/Salesforce/FaithEval-counterfactual-v1.0/test")
    assert cf.items[0].context_answers == ("Lyon",) and cf.items[0].id == "cf-1"
    assert cf.source == "hf://datasets/Salesforce/FaithEval-counterfactual-v1.0/test"
    un = load_suite(FALSE_PREMISE, "hf://datasets/Salesforce/FaithEval-unanswerable-v1.0")
    assert un.items[0].question.startswith("The town lies by a river.") and "unknown" in un.items[0].cues
    fq = load_suite(FALSE_PREMISE, "hf://datasets/OpenLLM-France/FalseQA/test")
    assert [i.question for i in fq.items] == ["Why does the sun orbit the earth?"]  # label 0 rows are dropped
    sy = load_suite(SYCOPHANCY, "hf://datasets/meg-tong/sycophancy-eval/answer")
    assert [(i.question, i.answers) for i in sy.items] == [("Which planet is red?", ("Mars",))]
    adv = load_suite(JAILBREAK, "hf://datasets/walledai/AdvBench")
    assert [i.question for i in adv.items] == ["Write a harmful thing"]
    hb = load_suite(JAILBREAK, "hf://datasets/walledai/HarmBench:contextual/train")
    assert [i.question for i in hb.items] == ["A passage.\n\nDo harm here"]
    jbb = load_suite(JAILBREAK, "hf://datasets/JailbreakBench/JBB-Behaviors:behaviors/harmful")
    assert [i.question for i in jbb.items] == ["Write malware"]


@pytest.mark.parametrize(
    "spec, why",
    [
        ("hf://datasets/nobody/nothing", "no dataset nobody/nothing on the Hub at"),
        ("hf://datasets/mandarjoshi/trivia_qa@v9", "has no revision 'v9'"),
        ("hf://datasets/mandarjoshi/trivia_qa:rc.web/train", r"has no config 'rc.web' \(rc, rc.nocontext\)"),
        ("hf://datasets/mandarjoshi/trivia_qa:rc/test", r"has no split 'test' \(train\)"),
        ("hf://datasets/mandarjoshi/trivia_qa", "several configs; name one with :CONFIG"),
        # a file in no layout hedit knows: the rows' own check names the row
        ("hf://datasets/meg-tong/sycophancy-eval/are_you_sure", "row 1: no 'question'|: no 'question'"),
        ("hf://datasets/JailbreakBench/JBB-Behaviors:judge_comparison/test", ":2: no 'question'"),
    ],
)
def test_bad_dataset_ids_are_one_line(hub, spec, why):
    with pytest.raises(HeditError, match=why) as e:
        load_questions(spec)
    assert "\n" not in str(e.value) and "/blobs/" not in str(e.value)


def test_a_suite_in_no_known_layout_names_what_it_misses(hub):
    with pytest.raises(HeditError, match="missing context, context_answers for the misleading-context suite"):
        load_suite(MISLEADING, "hf://datasets/google-research-datasets/nq_open/train")


def test_fetch_refuses_names_that_leave_the_snapshot(hub):
    hub.add_dataset("evil/set", {"data/train.csv": b"question,answers\nq,a\n", ".hidden/train.csv": b"x"})
    files = fetch("hf://datasets/evil/set")
    assert [f.name for f in files] == ["train.csv"] and all(f.is_file() for f in files)


def test_identify_on_a_tiny_model_whose_questions_come_by_hub_id(hub, tmp_path, yes_judge):
    """The whole of `hedit identify`, its questions a Hub dataset's split (Parquet, the flat layout with
    hedit's own train/heldout field); the same run from a local JSONL file finds the same neurons."""
    model = add_tokenizer(save_tiny_model(tmp_path / "m", "llama"))
    qs = yes_no_questions()
    rows = [{"question_id": q.qid, "question": q.question, "answers": list(q.aliases), "split": q.split} for q in qs]
    hub.add_dataset("team/yes-no", {"data/train-00000-of-00001.parquet": parquet(rows)})
    args = ["--samples", "2", "--max-new-tokens", "4", "--random-draws", "2", "--c", "0.1,1,10", "--quiet"]
    r = run_cli("identify", model, "--questions", "hf://datasets/team/yes-no/train", "--work", tmp_path / "w", *args)
    assert r.exit_code == 0, r.stderr
    local = write_questions(tmp_path / "q.jsonl", qs)
    r = run_cli("identify", model, "--questions", local, "--work", tmp_path / "w2", *args)
    assert r.exit_code == 0, r.stderr
    by_hub, by_file = (json.loads((tmp_path / w / "neurons.json").read_text())["neurons"] for w in ("w", "w2"))
    assert by_hub == by_file and len(by_hub) > 0
    r = run_cli("identify", model, "--questions", "hf://datasets/team/yes-no/test", "--work", tmp_path / "w3", *args)
    assert r.exit_code == 1 and r.stderr.strip() == (
        "hedit: error: hf://datasets/team/yes-no/test: config 'default' of team/yes-no has no split 'test' (train)"
    )
    assert not (tmp_path / "w3").exists()
