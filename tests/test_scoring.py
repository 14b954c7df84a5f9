"""Tests of the official DSTC7-AVSD scoring (`avsd_dataset/score.py`, `metrics/avsd/avsd.py`).

Scores are checked against pycocoevalcap's scorers called directly, the way `COCOEvalCap.evaluate()`
calls them (two PTB tokenizer calls, then Bleu(4), Meteor, Rouge, Cider), on generated sets and on
the real DSTC7 reference file when `../shared/avsd/` exists. Each METEOR/PTB call costs seconds, so
the expensive computations are module-scoped fixtures shared by the tests.
"""

import ast
import copy
import json
import os
import random
import shutil
import subprocess
import sys

import pytest

from avsd_dataset import score
from avsd_dataset.score import (
    DEFAULT_STOPWORDS,
    METRIC_NAMES,
    JavaNotFoundError,
    StopwordFilter,
    compute_caption_metrics,
    filter_stopwords,
    format_scores,
    load_dstc7_results,
    load_references,
    prepare_dstc7_inputs,
    score_result_file,
)


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRIC_DIR = os.path.join(REPO_ROOT, "metrics", "avsd")
SHARED_AVSD_DIR = os.path.abspath(os.path.join(REPO_ROOT, "..", "shared", "avsd"))
REAL_TEST_JSON = os.path.join(SHARED_AVSD_DIR, "test_set4DSTC7-AVSD.json")
REAL_MULTIREF_JSON = os.path.join(SHARED_AVSD_DIR, "test_set4DSTC7-AVSD_multiref.json")
REAL_STOPWORDS = os.path.join(SHARED_AVSD_DIR, "stopwords.txt")

requires_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR and the PTB tokenizer need Java")
requires_real_data = pytest.mark.skipif(
    not (os.path.isfile(REAL_TEST_JSON) and os.path.isfile(REAL_MULTIREF_JSON)),
    reason="the real DSTC7 files are not in ../shared/avsd/",
)
TOLERANCE = 1e-9


# ------------------------------------------------------------------------------------------------
# Independent oracles
# ------------------------------------------------------------------------------------------------


def direct_pycocoevalcap(hypotheses, references):
    """pycocoevalcap's scorers called directly, as `COCOEvalCap.evaluate()` does (without SPICE)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {index + 1: [{"caption": ref} for ref in refs] for index, refs in enumerate(references)}
    res = {index + 1: [{"caption": hypothesis}] for index, hypothesis in enumerate(hypotheses)}
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize(gts)
    res = tokenizer.tokenize(res)
    scores = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"Bleu_{order}": value for order, value in enumerate(bleu, start=1)})
    meteor = Meteor()
    scores["METEOR"] = meteor.compute_score(gts, res)[0]
    del meteor
    scores["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    scores["CIDEr"] = Cider().compute_score(gts, res)[0]
    return scores


def official_filter_oracle(text):
    """What `^,$` and `^.$` do to the UTF-8 bytes of Python 2: drop every one-byte word."""
    return b" ".join(word for word in text.encode("utf-8").split() if len(word) != 1).decode("utf-8")


def assert_scores_close(actual, expected):
    assert list(actual) == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert isinstance(actual[name], float), name
        assert abs(actual[name] - expected[name]) <= TOLERANCE, (name, actual[name], expected[name])


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------

WORDS = [
    "a", "i", "the", "man", "woman", "he", "she", "is", "sitting", "on", "couch", "opens", "window",
    "door", "yes", "no", "not", "it", "'s", "it's", "don't", "cup", "red", "two", "people", "kitchen",
    "Kitchen", "DOOR", "2", "10", "x", ",", ".", "?", "!", '"', "(", ")", "...", "-", "&", ";", "colour",
    "looks", "outside", "A", "I",
]  # fmt: skip


def make_generated_set(seed=0, size=48):
    """Hypotheses and 2-6 references each, with punctuation, case, quotes and one-character words."""
    rng = random.Random(seed)

    def caption(low, high):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))

    hypotheses, references = [], []
    for index in range(size):
        refs = [caption(3, 14) for _ in range(rng.randint(2, 6))]
        if index % 4 == 0:
            hypothesis = refs[0]
        elif index % 4 == 1:
            words = rng.choice(refs).split()
            words.insert(rng.randint(0, len(words)), rng.choice(["a", "i", "A", "2", ","]))
            hypothesis = " ".join(words)
        else:
            hypothesis = caption(1, 12)
        hypotheses.append(hypothesis)
        references.append(refs)
    hypotheses[5] = "a ."  # empty after the official filter
    hypotheses[6] = "  yes ,\tthe   man  is on the couch "
    hypotheses[7] = ""
    return hypotheses, references


@pytest.fixture(scope="module")
def generated_set():
    return make_generated_set()


@pytest.fixture(scope="module")
def direct_plain_scores(generated_set):
    hypotheses, references = generated_set
    return direct_pycocoevalcap(hypotheses, references)


@pytest.fixture(scope="module")
def direct_official_scores(generated_set):
    hypotheses, references = generated_set
    return direct_pycocoevalcap([official_filter_oracle(h) for h in hypotheses], references)


def make_tiny_test_set():
    """A small test file (the last answer undisclosed) and its multi-reference file, in the official formats."""
    dialogs = []
    images, annotations = [], []
    for index, (image_id, num_turns) in enumerate([("AAA01", 1), ("BBB02", 3), ("CCC03", 2), ("DDD04", 10)]):
        turns = [{"question": f"question {t} ?", "answer": f"answer number {t} ."} for t in range(num_turns)]
        turns[-1]["answer"] = "__UNDISCLOSED__"
        dialogs.append({"image_id": image_id, "caption": "a caption .", "summary": "a summary .", "dialog": turns})
        images.append({"id": index + 1, "name": f"{image_id}_{num_turns - 1}"})
        for ref in range(3):
            annotations.append({"image_id": index + 1, "id": len(annotations) + 1, "caption": f"reference {ref} of {image_id} ."})
    test = {"type": "scene_aware_dialog", "version": "0.1", "dialogs": dialogs}
    multiref = {"info": {}, "licenses": [], "type": "captions", "images": images, "annotations": annotations}
    return test, multiref


def fill_answers(test, answers):
    result = copy.deepcopy(test)
    for dialog, answer in zip(result["dialogs"], answers):
        dialog["dialog"][-1]["answer"] = answer
    return result


@pytest.fixture()
def tiny_files():
    test, multiref = make_tiny_test_set()
    result = fill_answers(test, ["yes , a man .", "i think so", "no", "he opens the door ."])
    return result, multiref


# ------------------------------------------------------------------------------------------------
# Stopword filter (no Java)
# ------------------------------------------------------------------------------------------------


def test_official_filter_removes_every_one_character_word():
    assert filter_stopwords("yes , i think a man is there .") == "yes think man is there"
    assert filter_stopwords("A I 2 ? ! x ab it's 10") == "ab it's 10"
    assert filter_stopwords("a .") == ""
    assert filter_stopwords("  he\tis \n here  ") == "he is here"
    # The official Python 2 code matches bytes: a two-byte letter is not "one character".
    assert filter_stopwords("caf\u00e9 \u00e9 a") == "caf\u00e9 \u00e9"
    for text in make_generated_set()[0]:
        assert filter_stopwords(text) == official_filter_oracle(text)


def test_stopword_file_format(tmp_path):
    official = tmp_path / "stopwords.txt"
    official.write_text(",\n.\n")
    text = "yes , a man opens the Colour door ."
    assert StopwordFilter(str(official))(text) == StopwordFilter()(text) == "yes man opens the Colour door"
    custom = tmp_path / "custom.txt"
    custom.write_text("the\n\n[Cc]olour color\nthree fields here\n")
    # Patterns are anchored and case-sensitive; a second column replaces instead of removing.
    assert StopwordFilter(str(custom))("The the colour Colour ,") == "The color color ,"
    assert StopwordFilter([])("a  b") == "a b"


@requires_real_data
def test_default_stopwords_are_the_official_file():
    with open(REAL_STOPWORDS, encoding="utf-8") as stopword_file:
        assert tuple(line.strip() for line in stopword_file if line.strip()) == DEFAULT_STOPWORDS
    assert StopwordFilter(REAL_STOPWORDS).patterns == StopwordFilter().patterns


# ------------------------------------------------------------------------------------------------
# Result / reference files and their errors (no Java)
# ------------------------------------------------------------------------------------------------


def test_load_result_and_reference_files(tiny_files, tmp_path):
    result, multiref = tiny_files
    # Images listed out of id order: the official pairing is by numeric id.
    multiref["images"] = list(reversed(multiref["images"]))
    result_path, multiref_path = tmp_path / "result.json", tmp_path / "multiref.json"
    result_path.write_text(json.dumps(result))
    multiref_path.write_text(json.dumps(multiref))

    results = load_dstc7_results(str(result_path))
    assert [r["id"] for r in results] == ["AAA01_0", "BBB02_2", "CCC03_1", "DDD04_9"]
    assert [r["turn"] for r in results] == [0, 2, 1, 9]
    references = load_references(str(multiref_path))
    assert [r["id"] for r in references] == ["AAA01_0", "BBB02_2", "CCC03_1", "DDD04_9"]
    assert references[1]["references"] == [f"reference {i} of BBB02 ." for i in range(3)]

    hypotheses, refs = prepare_dstc7_inputs(str(result_path), str(multiref_path))
    assert hypotheses == ["yes man", "think so", "no", "he opens the door"]
    assert refs == [r["references"] for r in references]
    assert prepare_dstc7_inputs(result, multiref, stopwords=None)[0] == ["yes , a man .", "i think so", "no", "he opens the door ."]


def test_only_the_last_turn_is_read(tiny_files):
    result, multiref = tiny_files
    expected = prepare_dstc7_inputs(result, multiref)
    for dialog in result["dialogs"]:
        for turn in dialog["dialog"][:-1]:
            turn["answer"] = "__UNDISCLOSED__"
    result["dialogs"][3]["dialog"][0]["answer"] = ""
    assert prepare_dstc7_inputs(result, multiref) == expected


def test_order_and_count_errors(tiny_files):
    result, multiref = tiny_files

    swapped = copy.deepcopy(result)
    swapped["dialogs"][1], swapped["dialogs"][2] = swapped["dialogs"][2], swapped["dialogs"][1]
    with pytest.raises(ValueError, match=r"Dialogue 1 .*'CCC03_1'.*'BBB02_2'"):
        prepare_dstc7_inputs(swapped, multiref)

    truncated = copy.deepcopy(result)
    truncated["dialogs"][3]["dialog"].pop()
    with pytest.raises(ValueError, match=r"Dialogue 3 .*'DDD04_8'.*turn 8.*'DDD04_9'"):
        prepare_dstc7_inputs(truncated, multiref)

    missing = copy.deepcopy(result)
    missing["dialogs"].pop()
    with pytest.raises(ValueError, match=r"3 dialogues but the reference file has 4 .*index 3"):
        prepare_dstc7_inputs(missing, multiref)

    extra = copy.deepcopy(result)
    extra["dialogs"].append(copy.deepcopy(extra["dialogs"][0]))
    with pytest.raises(ValueError, match=r"5 dialogues but the reference file has 4"):
        prepare_dstc7_inputs(extra, multiref)

    with pytest.raises(ValueError, match="'dialogs' list"):
        prepare_dstc7_inputs({"annotations": []}, multiref)
    with pytest.raises(ValueError, match="'images' and 'annotations'"):
        prepare_dstc7_inputs(result, {"dialogs": []})


def test_undisclosed_answers_are_errors(tiny_files):
    result, multiref = tiny_files
    result["dialogs"][2]["dialog"][-1]["answer"] = "__UNDISCLOSED__"
    with pytest.raises(ValueError, match=r"Dialogue 2 \(CCC03_1\).*__UNDISCLOSED__"):
        score_result_file(result, multiref)


@pytest.mark.parametrize("empty_answer", ["", "   "])
def test_empty_answers_are_scored_as_empty(tiny_files, empty_answer, caplog):
    """What run_vgd.py writes when the model generates nothing: kept, scored as an empty hypothesis."""
    result, multiref = tiny_files
    result["dialogs"][2]["dialog"][-1]["answer"] = empty_answer
    with caplog.at_level("WARNING", logger="avsd_dataset.score"):
        hypotheses, _ = prepare_dstc7_inputs(result, multiref)
    assert hypotheses[2] == ""
    assert "1 answers of the result file are empty" in caplog.text


def test_missing_java_is_reported(monkeypatch, tiny_files):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    with pytest.raises(JavaNotFoundError, match="apt-get install default-jre-headless"):
        compute_caption_metrics(["a man"], [["a man sits"]])
    with pytest.raises(JavaNotFoundError, match="conda install"):
        score_result_file(*tiny_files)


def test_input_validation():
    with pytest.raises(ValueError, match="2 predictions but 1 reference lists"):
        compute_caption_metrics(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="non-empty list of reference strings"):
        compute_caption_metrics(["a"], [[]])
    with pytest.raises(ValueError, match="empty"):
        compute_caption_metrics([], [])


def run_command(args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "avsd_dataset.score", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_command_errors(tiny_files, tmp_path):
    result, multiref = tiny_files
    multiref_path = tmp_path / "multiref.json"
    multiref_path.write_text(json.dumps(multiref))

    swapped = copy.deepcopy(result)
    swapped["dialogs"][0], swapped["dialogs"][3] = swapped["dialogs"][3], swapped["dialogs"][0]
    swapped_path = tmp_path / "swapped.json"
    swapped_path.write_text(json.dumps(swapped))
    completed = run_command([str(swapped_path), str(multiref_path)])
    assert completed.returncode == 1
    assert "error: Dialogue 0 of the result file" in completed.stderr and "'DDD04_9'" in completed.stderr
    assert completed.stdout == ""

    result_path = tmp_path / "result.json"
    result_path.write_text(json.dumps(result))
    no_java_env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    no_java_env["PATH"] = str(tmp_path / "empty_bin")
    completed = run_command([str(result_path), str(multiref_path)], env=no_java_env)
    assert completed.returncode == 1
    assert "no `java` executable was found" in completed.stderr
    assert "apt-get install default-jre-headless" in completed.stderr

    completed = run_command([str(tmp_path / "absent.json"), str(multiref_path)])
    assert completed.returncode == 1 and "absent.json" in completed.stderr


def test_metric_module_core_is_a_copy_of_score_py():
    """metrics/avsd/avsd.py is self-contained; its scoring core must stay identical to score.py's."""
    shared_definitions = ["JavaNotFoundError", "check_java", "StopwordFilter", "_to_reference_lists", "_close_meteor", "compute_caption_metrics"]
    shared_constants = ["DEFAULT_STOPWORDS", "METRIC_NAMES", "JAVA_INSTALL_HINT", "_JAVA_LINE_BREAKS"]

    def definitions(path):
        with open(path, encoding="utf-8") as source_file:
            source = source_file.read()
        found = {}
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                found[node.name] = ast.get_source_segment(source, node)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                found[target.id] = ast.get_source_segment(source, node)
        return found

    ours = definitions(score.__file__)
    module = definitions(os.path.join(METRIC_DIR, "avsd.py"))
    for name in shared_definitions + shared_constants:
        assert module.get(name) == ours[name], f"{name} differs between metrics/avsd/avsd.py and score.py"
    with open(os.path.join(METRIC_DIR, "avsd.py"), encoding="utf-8") as module_file:
        module_imports = [line for line in module_file if line.startswith(("import ", "from "))]
    assert not any("avsd_dataset" in line for line in module_imports)


# ------------------------------------------------------------------------------------------------
# Scores against direct pycocoevalcap (Java)
# ------------------------------------------------------------------------------------------------


@requires_java
def test_compute_caption_metrics_matches_direct_pycocoevalcap(generated_set, direct_plain_scores):
    hypotheses, references = generated_set
    assert_scores_close(compute_caption_metrics(hypotheses, references), direct_plain_scores)
    assert 0.0 < direct_plain_scores["Bleu_4"] < 1.0 and direct_plain_scores["CIDEr"] > 0.0


@requires_java
def test_evaluate_module_dstc7_config_matches_direct_pycocoevalcap(generated_set, direct_official_scores):
    import evaluate

    hypotheses, references = generated_set
    metric = evaluate.load(METRIC_DIR, "dstc7")
    assert_scores_close(metric.compute(predictions=hypotheses, references=references), direct_official_scores)
    with pytest.raises(ValueError, match="only applies with `official_protocol=True`"):
        metric.compute(predictions=hypotheses, references=references, official_protocol=False, stopwords=[","])
    with pytest.raises(ValueError, match="Unknown configuration"):
        evaluate.load(METRIC_DIR, "dstc8")


@requires_java
def test_evaluate_module_works_when_copied_and_loaded_from_elsewhere(generated_set, direct_plain_scores, tmp_path):
    """Load a copy of the folder from another working directory, with the repository off sys.path."""
    copied_dir = tmp_path / "copied_metrics" / "avsd"
    shutil.copytree(METRIC_DIR, copied_dir, ignore=shutil.ignore_patterns("__pycache__"))
    inputs_path = tmp_path / "inputs.json"
    inputs_path.write_text(json.dumps(generated_set))
    script = (
        "import json, sys\n"
        "sys.modules['avsd_dataset'] = None  # the project may be installed: make it unimportable here\n"
        "import evaluate\n"
        f"hypotheses, references = json.load(open({str(inputs_path)!r}))\n"
        f"metric = evaluate.load({str(copied_dir)!r})\n"
        "print(json.dumps(metric.compute(predictions=hypotheses, references=references)))\n"
    )
    work_dir = tmp_path / "elsewhere"
    work_dir.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=work_dir, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr
    assert_scores_close(json.loads(completed.stdout.strip().splitlines()[-1]), direct_plain_scores)


# ------------------------------------------------------------------------------------------------
# The real DSTC7 reference file (../shared/avsd/)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_data(tmp_path_factory):
    """Real test dialogues answered with their first reference, with and without a one-letter word added."""
    with open(REAL_TEST_JSON, encoding="utf-8") as test_file:
        test = json.load(test_file)
    with open(REAL_MULTIREF_JSON, encoding="utf-8") as multiref_file:
        multiref = json.load(multiref_file)
    references = {}
    for annotation in multiref["annotations"]:
        references.setdefault(annotation["image_id"], []).append(annotation["caption"])
    first_references = [references[index + 1][0] for index in range(len(test["dialogs"]))]
    rng = random.Random(0)
    with_letter = []
    for first_reference in first_references:
        words = first_reference.split()
        words.insert(rng.randint(0, len(words)), rng.choice(["a", "i", "A", "I"]))
        with_letter.append(" ".join(words))
    folder = tmp_path_factory.mktemp("real_results")
    paths = {}
    for name, answers in [("first_reference", first_references), ("with_letter", with_letter)]:
        paths[name] = str(folder / f"result_{name}.json")
        with open(paths[name], "w", encoding="utf-8") as result_file:
            json.dump(fill_answers(test, answers), result_file)
    return {
        "test": test,
        "multiref": multiref,
        "first_references": first_references,
        "with_letter": with_letter,
        "references": [references[index + 1] for index in range(len(test["dialogs"]))],
        "paths": paths,
    }


@requires_real_data
def test_real_data_filter_and_order_rules(real_data):
    multiref = real_data["multiref"]
    hypotheses, references = prepare_dstc7_inputs(real_data["paths"]["with_letter"], REAL_MULTIREF_JSON)
    assert len(hypotheses) == len(references) == 1710
    assert references == real_data["references"] and all(len(refs) == 6 for refs in references)
    # The filter removes the added one-letter word (and any other one-character word): the scored
    # hypotheses are exactly those of the first-reference result file.
    assert hypotheses == [official_filter_oracle(h) for h in real_data["with_letter"]]
    assert hypotheses == prepare_dstc7_inputs(real_data["paths"]["first_reference"], REAL_MULTIREF_JSON)[0]
    assert hypotheses == [" ".join(ref.split()) for ref in real_data["first_references"]]
    # References are not filtered; hypotheses are, unless the filter is switched off.
    assert any(any(len(word) == 1 for word in ref.split()) for refs in references for ref in refs)
    assert prepare_dstc7_inputs(real_data["paths"]["with_letter"], multiref, stopwords=None)[0] == real_data["with_letter"]

    # Only the last turn counts: rewriting every earlier answer changes nothing.
    result = fill_answers(real_data["test"], real_data["with_letter"])
    for dialog in result["dialogs"]:
        for turn in dialog["dialog"][:-1]:
            turn["answer"] = "__UNDISCLOSED__"
    assert prepare_dstc7_inputs(result, multiref)[0] == hypotheses

    # File order is checked against the reference names.
    shuffled = copy.deepcopy(result)
    shuffled["dialogs"][100], shuffled["dialogs"][1000] = shuffled["dialogs"][1000], shuffled["dialogs"][100]
    name_100 = multiref["images"][100]["name"]
    name_1000 = multiref["images"][1000]["name"]
    with pytest.raises(ValueError, match=rf"Dialogue 100 .*'{name_1000}'.*'{name_100}'"):
        prepare_dstc7_inputs(shuffled, multiref)
    shorter = copy.deepcopy(result)
    del shorter["dialogs"][-1]
    with pytest.raises(ValueError, match="1709 dialogues but the reference file has 1710"):
        prepare_dstc7_inputs(shorter, multiref)
    with pytest.raises(ValueError, match=r"Dialogue 0 \(VC5RZ_0\).*__UNDISCLOSED__"):
        prepare_dstc7_inputs(REAL_TEST_JSON, multiref)


@requires_real_data
@requires_java
def test_real_data_command_matches_direct_pycocoevalcap(real_data, tmp_path):
    output_json = tmp_path / "scores" / "metrics.json"
    command = subprocess.Popen(
        [sys.executable, "-m", "avsd_dataset.score", real_data["paths"]["with_letter"], REAL_MULTIREF_JSON]
        + ["--output_json", str(output_json)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The direct computation runs meanwhile.
    expected = direct_pycocoevalcap(
        [official_filter_oracle(h) for h in real_data["with_letter"]], real_data["references"]
    )
    stdout, stderr = command.communicate(timeout=300)
    assert command.returncode == 0, stderr
    with open(output_json, encoding="utf-8") as output_file:
        scores = json.load(output_file)
    assert stdout.strip() == format_scores(scores)
    assert stdout.splitlines()[1] == f"Bleu_1: {scores['Bleu_1']:.3f}"
    assert_scores_close(scores, expected)
    # Once the added word is filtered out, each hypothesis is its first reference.
    for name in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L"]:
        assert scores[name] > 0.99, name
